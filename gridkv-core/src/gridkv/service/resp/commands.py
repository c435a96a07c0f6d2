"""The commands the RESP door answers, each as Redis 7 answers it.

A handler takes the door, the client and the command's arguments (the name first) and returns
the encoded reply, or an awaitable of it when the node has to ask other nodes. Keys are UTF-8
text in GridKV; a key that is not is refused with an error naming that. ``docs/resp.md`` lists
every command with its consistency level and cost; the groups below follow it.

- Reads (GET, MGET, STRLEN, GETRANGE, EXISTS, TTL...) read at the door's level; at ``one`` a
  key this node holds is answered on the spot.
- Plain writes (SET without NX/XX/GET/KEEPTTL, MSET, SETEX, PSETEX) write at the door's level.
- Read-modify-write commands (INCR and kin, APPEND, SETRANGE, SET NX/XX/GET/KEEPTTL, SETNX,
  GETSET, GETDEL, GETEX with an option, EXPIRE and kin, PERSIST, DEL, UNLINK) run on the key's
  primary owner, one after the other there (:mod:`gridkv.cluster.replication.mutations`).
- Two-key commands (RENAME, RENAMENX, COPY) and MSETNX combine those; they are not atomic
  across two owners (see docs/resp.md).
- Cluster-wide commands (KEYS, SCAN, DBSIZE, RANDOMKEY, FLUSHDB, FLUSHALL) ask the primary
  owner of every partition.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from gridkv.api.base import get_here_first, guarded, set_here_first
from gridkv.base.errors import (
    EmptyKey,
    GridKVError,
    InvalidArgument,
    KeyTooLarge,
    MemoryLimitExceeded,
    NotReady,
    OperationRefused,
    PeerUnavailable,
    QuorumNotReached,
    ShuttingDown,
    ValueTooLarge,
)
from gridkv.base.keys import hash_key_bytes, partition_of
from gridkv.base.log import LOGGER_NAME
from gridkv.cluster.keyspace import glob
from gridkv.cluster.replication.mutations import (
    ALWAYS,
    AT,
    EXPIRE_ANY,
    EXPIRE_GT,
    EXPIRE_LT,
    EXPIRE_NX,
    EXPIRE_XX,
    IF_ABSENT,
    IF_PRESENT,
    NOT_INTEGER,
    PERSIST,
    parse_integer,
    too_large,
)
from gridkv.service.resp.protocol import OK, PONG, RESP2, RESP3, Replies, encode_error
from gridkv.storage.base import Entry
from gridkv.storage.record import HEADER_SIZE as PLAIN_AT

if TYPE_CHECKING:
    from gridkv.api.aio import AsyncGridKV
    from gridkv.base.options import Options

__all__ = [
    "Door",
    "Client",
    "Command",
    "COMMANDS",
    "CommandError",
    "Reply",
    "dispatch",
    "key_of",
    "REDIS_VERSION",
]

log = logging.getLogger(LOGGER_NAME)

#: The Redis version the door reports (clients pick features by it).
REDIS_VERSION: Final = "7.0.0"
_SYNTAX: Final = "ERR syntax error"
_tuple_new = tuple.__new__
_I64_MAX: Final = (1 << 63) - 1
#: The largest offset SETRANGE takes (Redis's proto-max-bulk-len, 512 MiB).
_MAX_OFFSET: Final = 512 * 1024 * 1024
#: Partitions a SCAN call visits at least.
_SCAN_WINDOW: Final = 16


class CommandError(Exception):
    """A command's error reply (Redis's words); the connection stays open."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


Reply = bytes | Awaitable[bytes]
Handler = Callable[["Door", "Client", list[bytes]], Reply]


@dataclass(frozen=True, slots=True)
class Command:
    """A command the door knows: its arity and key positions as COMMAND reports them."""

    name: str
    arity: int
    flags: tuple[str, ...]
    first_key: int
    last_key: int
    step: int
    group: str
    summary: str
    handler: Handler
    #: Subcommands (CLIENT, COMMAND, CONFIG), by lower-case name.
    subcommands: dict[str, Command] = field(default_factory=dict)
    #: Whether it may run before AUTH.
    no_auth: bool = False


@dataclass(slots=True)
class Client:
    """One connection's state."""

    id: int
    addr: str
    laddr: str
    created: float = field(default_factory=time.monotonic)
    name: bytes = b""
    user: str = "default"
    authenticated: bool = True
    replies: Replies = field(default_factory=Replies)
    last_command: str = "NULL"
    last_active: float = field(default_factory=time.monotonic)
    lib_name: bytes = b""
    lib_ver: bytes = b""
    #: Set by QUIT: close once the reply is written.
    closing: bool = False
    #: Output bytes waiting in the transport (for CLIENT INFO's omem).
    pending_output: Callable[[], int] = lambda: 0

    def info_line(self) -> str:
        """This client as CLIENT LIST and CLIENT INFO describe it."""
        now = time.monotonic()
        return (
            f"id={self.id} addr={self.addr} laddr={self.laddr} fd=-1 "
            f"name={self.name.decode(errors='replace')} age={int(now - self.created)} "
            f"idle={int(now - self.last_active)} flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 "
            f"qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 "
            f"omem={self.pending_output()} tot-mem=0 events=r cmd={self.last_command} "
            f"user={self.user} redir=-1 resp={self.replies.version} "
            f"lib-name={self.lib_name.decode(errors='replace')} "
            f"lib-ver={self.lib_ver.decode(errors='replace')}\n"
        )


class Door:
    """What every connection's commands share: the node's API, options and counters.

    :param kv: the node's async API.
    """

    def __init__(self, kv: AsyncGridKV) -> None:
        self.kv = kv
        self.node = kv.node
        options: Options = kv.options
        self.options = options
        resp = options.resp
        #: The level the door passes to the API: ``None`` keeps the node's default (and its
        #: local fast paths).
        self.consistency: str | None = resp.consistency or None
        #: The level of the door's operations that go through the node.
        self.level: str = resp.consistency or options.consistency
        self.users: dict[str, str] = dict(u.split(":", 1) for u in resp.users)
        if resp.password:
            self.users["default"] = resp.password
        # What the GET fast path reads, looked up once.
        self.max_key = options.max_key_bytes
        self.partition_count = options.partition_count
        self.local_parts = self.node.local_parts
        self.primary_here = self.node.primary_here
        # What the SET fast path calls and reads (as ClientBase._adopt looks them up).
        self.max_value = options.max_value_bytes
        self.over_limit = self.node.coordinator.batcher.over_limit
        self.queued = self.node.mutator.queued
        self.hlc_now = self.node.hlc.now
        self.writer = self.node.node_id
        self.write_here = self.node.write_here
        self.fast = self.node.telemetry.fast
        self.storage = self.node.storage
        self.clients: dict[int, Client] = {}
        self.started = time.time()
        self.commands_processed = 0
        self.connections_received = 0
        self.rejected_connections = 0
        self.port = 0
        self._random = random.Random()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def needs_auth(self) -> bool:
        """Whether a new connection starts unauthenticated (the default user has a password)."""
        return "default" in self.users

    def key(self, raw: bytes) -> str:
        """A key as GridKV takes it (UTF-8 text, within ``max_key_bytes``).

        :raises CommandError: it is not UTF-8, empty, or too long.
        """
        try:
            key = raw.decode()
        except UnicodeDecodeError:
            raise CommandError("ERR GridKV keys are UTF-8 text; this key is not") from None
        if not raw:
            raise CommandError("ERR GridKV does not store the empty key")
        if len(raw) > self.options.max_key_bytes:
            raise CommandError(
                f"ERR key is {len(raw)} bytes; GridKV's max_key_bytes is "
                f"{self.options.max_key_bytes}"
            )
        return key

    def check_value(self, value: bytes) -> None:
        """Refuse a value longer than ``max_value_bytes`` before it travels anywhere.

        :raises CommandError: it is.
        """
        if len(value) > self.max_value:
            raise CommandError(too_large(len(value), self.max_value))

    def partition(self, key: str) -> int:
        """The partition of ``key``."""
        return partition_of(key, self.options.partition_count)

    def spawn(self, work: Awaitable[Any], what: str) -> None:
        """Run ``work`` in the background (FLUSHALL ASYNC); its failure is logged, not lost."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: self._report(t, what))

    def _report(self, task: asyncio.Future[Any], what: str) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.warning(
            f"{what} failed in the background",
            extra={"node_id": self.node.node_id, "error": f"{type(exc).__name__}: {exc}"},
        )

    # -- reads and writes -------------------------------------------------------------------

    def here(self, key: str) -> int | None:
        """``key``'s partition when this node answers for it on the spot, else ``None``.

        It does as the key's primary owner, at the default level one, nothing moving in.
        """
        partition = self.partition(key)
        if self.consistency is None and self.primary_here[partition]:
            return partition
        return None

    async def entry(self, key: str) -> tuple[bytes, int] | None:
        """``(value, expires_at)`` of ``key``, or ``None`` when it is missing or expired.

        At level one, the primary owner's copy (here, or asked); at quorum or all, the
        freshest copy the level reads.
        """
        node = self.node
        partition = self.here(key)
        if partition is not None:
            found = node.storage.get_entry(partition, key)
        elif self.consistency is None:
            partition = self.partition(key)
            primary = node.mutator.primary(partition)
            if primary == node.node_id:  # a partition moving here: the mutator reads it
                answer = await self.mutate(key, "read", [])
                return None if answer is None else (answer[0], answer[1])
            node.check_joined()
            read = node.coordinator.read_from(primary, partition, key)
            found = await guarded(read, node, "get", key)
        else:
            partition = self.partition(key)
            found = await guarded(node.read(partition, key, self.level), node, "get", key)
        if found is None or found.value is None or found.expired(node.now_ms()):
            return None
        return found.value, found.expires_at

    async def value(self, key: str) -> bytes | None:
        """The value of ``key``, or ``None`` (as :meth:`entry` reads it)."""
        if self.here(key) is not None:
            return get_here_first(self.kv, key)  # type: ignore[no-any-return]
        found = await self.entry(key)
        return None if found is None else found[0]

    def put_now(self, key: str, value: bytes) -> bool:
        """Store ``value`` without expiry on the spot if this node may; whether it did.

        It may when it is the key's primary owner at level one and no atomic operation on
        the key runs or waits here (which the write would overtake).
        """
        return (
            self.here(key) is not None
            and not self.node.mutator.busy(key)
            and set_here_first(self.kv, key, value, ttl=0) is None
        )

    async def put(self, key: str, value: bytes, expires_at: int = 0) -> None:
        """Store ``value`` (expiring at ``expires_at``, ms; 0: never) through the primary."""
        self.check_value(value)
        if expires_at == 0 and self.put_now(key, value):
            return
        await self.mutate(key, "set", [value, expires_at, ALWAYS, False, False])

    async def mutate(self, key: str, op: str, args: list[Any]) -> Any:
        """Run the atomic operation ``op`` on ``key`` at its primary owner."""
        node = self.node
        node.check_joined()
        work = node.mutate(self.partition(key), key, op, args, self.level)
        return await guarded(work, node, op, key)


def error_of(exc: BaseException) -> bytes:
    """The error reply for an exception a command raised."""
    if isinstance(exc, CommandError):
        return encode_error(exc.message)
    if isinstance(exc, OperationRefused):
        return encode_error(str(exc))
    if isinstance(exc, MemoryLimitExceeded):
        return encode_error("OOM command not allowed when used memory > 'maxmemory'.")
    if isinstance(exc, NotReady):
        return encode_error(f"LOADING {exc}")
    if isinstance(exc, QuorumNotReached | PeerUnavailable):
        return encode_error(f"TRYAGAIN {exc}")
    if isinstance(exc, ShuttingDown):
        return encode_error(f"ERR {exc}")
    if isinstance(exc, ValueTooLarge | EmptyKey | KeyTooLarge | InvalidArgument):
        return encode_error(f"ERR {exc}")
    if isinstance(exc, GridKVError):
        return encode_error(f"ERR {type(exc).__name__}: {exc}")
    return encode_error(f"ERR internal error: {type(exc).__name__}: {exc}")


# -- argument helpers -------------------------------------------------------------------------


def _int(raw: bytes, error: str = NOT_INTEGER) -> int:
    number = parse_integer(raw)
    if number is None:
        raise CommandError(error)
    return number


def _expiry(name: str, unit: bytes, raw: bytes, now_ms: int) -> int:
    """An absolute expiry (ms) from EX/PX/EXAT/PXAT ``raw``; Redis's errors for bad ones."""
    number = _int(raw)
    bad = f"ERR invalid expire time in '{name}' command"
    if number <= 0:
        raise CommandError(bad)
    if unit in (b"EX", b"EXAT"):
        if number > _I64_MAX // 1000:
            raise CommandError(bad)
        number *= 1000
    at = number if unit in (b"EXAT", b"PXAT") else now_ms + number
    if at > _I64_MAX or at >= 1 << 62:
        raise CommandError(bad)
    return at


def _arity_error(name: str) -> CommandError:
    return CommandError(f"ERR wrong number of arguments for '{name}' command")


def _upper(raw: bytes) -> bytes:
    return raw.upper()


# -- connection -----------------------------------------------------------------------------


def _ping(door: Door, client: Client, args: list[bytes]) -> Reply:
    if len(args) == 1:
        return PONG
    if len(args) == 2:
        return client.replies.bulk(args[1])
    raise _arity_error("ping")


def _echo(door: Door, client: Client, args: list[bytes]) -> Reply:
    return client.replies.bulk(args[1])


def _check_password(door: Door, user: str, password: bytes) -> bool:
    expected = door.users.get(user)
    if expected is None:
        # Without resp.password the default user takes any password (Redis's "nopass").
        return user == "default"
    import hmac

    return hmac.compare_digest(expected.encode(), password)


def _auth(door: Door, client: Client, args: list[bytes]) -> Reply:
    if len(args) not in (2, 3):
        raise CommandError(_SYNTAX)
    if len(args) == 2 and "default" not in door.users:
        raise CommandError(
            "ERR AUTH <password> called without any password configured for the default "
            "user. Are you sure your configuration is correct?"
        )
    user = "default" if len(args) == 2 else args[1].decode(errors="replace")
    if not _check_password(door, user, args[-1]):
        raise CommandError("WRONGPASS invalid username-password pair or user is disabled.")
    client.user, client.authenticated = user, True
    return OK


def _hello(door: Door, client: Client, args: list[bytes]) -> Reply:
    version = client.replies.version
    i = 1
    if len(args) > 1:
        proto = parse_integer(args[1])
        if proto is None:
            raise CommandError("ERR Protocol version is not an integer or out of range")
        if proto not in (RESP2, RESP3):
            raise CommandError("NOPROTO unsupported protocol version")
        version = proto
        i = 2
    name: bytes | None = None
    while i < len(args):
        option = args[i].upper()
        if option == b"AUTH" and i + 2 < len(args):
            user = args[i + 1].decode(errors="replace")
            if not _check_password(door, user, args[i + 2]):
                raise CommandError("WRONGPASS invalid username-password pair or user is disabled.")
            client.user, client.authenticated = user, True
            i += 3
        elif option == b"SETNAME" and i + 1 < len(args):
            name = args[i + 1]
            _check_name(name)
            i += 2
        else:
            raise CommandError(
                f"ERR Syntax error in HELLO option '{args[i].decode(errors='replace')}'"
            )
    if not client.authenticated:
        raise CommandError(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
            "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
            "select the RESP protocol version at the same time"
        )
    if name is not None:
        client.name = name
    client.replies = Replies(version)
    r = client.replies
    return r.map(
        [
            (r.bulk(b"server"), r.bulk(b"redis")),
            (r.bulk(b"version"), r.bulk(REDIS_VERSION.encode())),
            (r.bulk(b"proto"), r.integer(version)),
            (r.bulk(b"id"), r.integer(client.id)),
            (r.bulk(b"mode"), r.bulk(b"standalone")),
            (r.bulk(b"role"), r.bulk(b"master")),
            (r.bulk(b"modules"), r.array([])),
        ]
    )


def _check_name(name: bytes) -> None:
    if any(c <= 32 or c > 126 for c in name):
        raise CommandError(
            "ERR Client names cannot contain spaces, newlines or special characters."
        )


def _select(door: Door, client: Client, args: list[bytes]) -> Reply:
    index = _int(args[1])
    if index != 0:
        raise CommandError("ERR DB index is out of range")
    return OK


def _quit(door: Door, client: Client, args: list[bytes]) -> Reply:
    client.closing = True
    return OK


def _reset(door: Door, client: Client, args: list[bytes]) -> Reply:
    client.replies = Replies(RESP2)
    client.name = b""
    client.user = "default"
    client.authenticated = not door.needs_auth
    return b"+RESET\r\n"


def _client_setname(door: Door, client: Client, args: list[bytes]) -> Reply:
    _check_name(args[2])
    client.name = args[2]
    return OK


def _client_getname(door: Door, client: Client, args: list[bytes]) -> Reply:
    return client.replies.maybe(client.name or None)


def _client_id(door: Door, client: Client, args: list[bytes]) -> Reply:
    return client.replies.integer(client.id)


def _client_info(door: Door, client: Client, args: list[bytes]) -> Reply:
    return client.replies.verbatim(client.info_line())


def _client_list(door: Door, client: Client, args: list[bytes]) -> Reply:
    if len(args) > 2:
        if args[2].upper() == b"TYPE" and len(args) == 4:
            if args[3].lower() not in (b"normal", b"master", b"replica", b"pubsub"):
                raise CommandError(f"ERR Unknown client type '{args[3].decode(errors='replace')}'")
            if args[3].lower() != b"normal":
                return client.replies.verbatim("")
        elif args[2].upper() == b"ID" and len(args) > 3:
            ids = {_int(a, "ERR Invalid client ID") for a in args[3:]}
            text = "".join(c.info_line() for c in door.clients.values() if c.id in ids)
            return client.replies.verbatim(text)
        else:
            raise CommandError(_SYNTAX)
    return client.replies.verbatim("".join(c.info_line() for c in door.clients.values()))


def _client_setinfo(door: Door, client: Client, args: list[bytes]) -> Reply:
    attr = args[2].upper()
    if attr == b"LIB-NAME":
        _check_name(args[3]) if args[3] else None
        client.lib_name = args[3]
    elif attr == b"LIB-VER":
        client.lib_ver = args[3]
    else:
        raise CommandError(f"ERR Unrecognized option '{args[2].decode(errors='replace')}'")
    return OK


def _client_help(door: Door, client: Client, args: list[bytes]) -> Reply:
    return _help(client, "CLIENT", CLIENT_SUBCOMMANDS)


def _help(client: Client, name: str, subcommands: dict[str, Command]) -> bytes:
    lines = [f"{name} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"]
    for sub in subcommands.values():
        lines += [sub.name.split("|")[1].upper(), f"    {sub.summary}"]
    return client.replies.array([client.replies.simple(line) for line in lines])


# -- introspection ---------------------------------------------------------------------------


def _command_entry(door: Door, client: Client, command: Command) -> bytes:
    r = client.replies
    subs = [_command_entry(door, client, s) for s in command.subcommands.values()]
    return r.array(
        [
            r.bulk(command.name.encode()),
            r.integer(command.arity),
            r.set([r.simple(f) for f in command.flags]),
            r.integer(command.first_key),
            r.integer(command.last_key),
            r.integer(command.step),
            r.set([r.simple(f"@{command.group}")]),
            r.set([]),
            r.array([]),
            r.array(subs),
        ]
    )


def _command(door: Door, client: Client, args: list[bytes]) -> Reply:
    return client.replies.array([_command_entry(door, client, c) for c in COMMANDS.values()])


def _command_count(door: Door, client: Client, args: list[bytes]) -> Reply:
    return client.replies.integer(len(COMMANDS))


def _command_info(door: Door, client: Client, args: list[bytes]) -> Reply:
    if len(args) == 2:
        return _command(door, client, args)
    r = client.replies
    out = []
    for raw in args[2:]:
        found = _lookup(raw)
        out.append(r.null_array if found is None else _command_entry(door, client, found))
    return r.array(out)


def _lookup(raw: bytes) -> Command | None:
    name = raw.decode(errors="replace").lower()
    if "|" in name:
        head, _, sub = name.partition("|")
        parent = COMMANDS.get(head)
        return None if parent is None else parent.subcommands.get(f"{head}|{sub}")
    return COMMANDS.get(name)


def _docs_of(client: Client, command: Command) -> bytes:
    r = client.replies
    pairs = [
        (r.bulk(b"summary"), r.bulk(command.summary.encode())),
        (r.bulk(b"since"), r.bulk(b"1.0.0")),
        (r.bulk(b"group"), r.bulk(command.group.encode())),
    ]
    if command.subcommands:
        pairs.append(
            (
                r.bulk(b"subcommands"),
                r.map(
                    [
                        (r.bulk(s.name.encode()), _docs_of(client, s))
                        for s in command.subcommands.values()
                    ]
                ),
            )
        )
    return r.map(pairs)


def _command_docs(door: Door, client: Client, args: list[bytes]) -> Reply:
    r = client.replies
    wanted = (
        [c for c in (_lookup(a) for a in args[2:]) if c is not None]
        if len(args) > 2
        else list(COMMANDS.values())
    )
    return r.map([(r.bulk(c.name.encode()), _docs_of(client, c)) for c in wanted])


def _command_list(door: Door, client: Client, args: list[bytes]) -> Reply:
    return client.replies.array([client.replies.bulk(name.encode()) for name in COMMANDS])


def _command_getkeys(door: Door, client: Client, args: list[bytes]) -> Reply:
    if len(args) < 3:
        raise _arity_error("command|getkeys")
    command = _lookup(args[2])
    if command is None:
        raise CommandError("ERR Invalid command specified")
    given = args[2:]
    if not _arity_ok(command.arity, len(given)):
        raise CommandError("ERR Invalid number of arguments specified for command")
    if command.first_key == 0:
        raise CommandError("ERR The command has no key arguments")
    last = command.last_key if command.last_key >= 0 else len(given) + command.last_key
    keys = given[command.first_key : last + 1 : command.step]
    return client.replies.array([client.replies.bulk(k) for k in keys])


def _command_help(door: Door, client: Client, args: list[bytes]) -> Reply:
    return _help(client, "COMMAND", COMMAND_SUBCOMMANDS)


def _arity_ok(arity: int, count: int) -> bool:
    return count == arity if arity > 0 else count >= -arity


_CONFIG_DEFAULTS: Final = {
    "save": "",
    "appendonly": "no",
    "databases": "1",
    "timeout": "0",
    "maxmemory-policy": "noeviction",
    "cluster-enabled": "no",
}


def _config_values(door: Door) -> dict[str, str]:
    opts = door.options
    values = dict(_CONFIG_DEFAULTS)
    values["maxmemory"] = str(opts.storage.max_memory_mb << 20)
    values["maxmemory-policy"] = "allkeys-lru" if opts.storage.eviction == "lru" else "noeviction"
    values["maxclients"] = str(opts.resp.max_clients)
    values["proto-max-bulk-len"] = str(opts.max_value_bytes)
    values["client-query-buffer-limit"] = str(opts.resp.max_query_bytes)
    values["port"] = str(door.port)
    return values


def _config_get(door: Door, client: Client, args: list[bytes]) -> Reply:
    values = _config_values(door)
    found: dict[str, str] = {}
    for raw in args[2:]:
        match = glob(raw.lower()).matches
        for name, value in values.items():
            if match(name.encode()):
                found[name] = value
    r = client.replies
    return r.map([(r.bulk(k.encode()), r.bulk(v.encode())) for k, v in sorted(found.items())])


def _config_set(door: Door, client: Client, args: list[bytes]) -> Reply:
    raise CommandError(
        "ERR CONFIG SET is not supported by GridKV: set the node's options in its config file"
    )


def _config_resetstat(door: Door, client: Client, args: list[bytes]) -> Reply:
    door.commands_processed = 0
    door.connections_received = 0
    door.rejected_connections = 0
    return OK


def _config_help(door: Door, client: Client, args: list[bytes]) -> Reply:
    return _help(client, "CONFIG", CONFIG_SUBCOMMANDS)


def _time(door: Door, client: Client, args: list[bytes]) -> Reply:
    now = time.time_ns() // 1000
    r = client.replies
    return r.array([r.bulk(str(now // 1_000_000).encode()), r.bulk(str(now % 1_000_000).encode())])


async def _dbsize(door: Door, client: Client, args: list[bytes]) -> bytes:
    _, count = await _gather(door, None, b"", count_only=True)
    return client.replies.integer(count)


async def _gather(
    door: Door, partitions: range | None, pattern: bytes, limit: int = 0, count_only: bool = False
) -> tuple[list[str], int]:
    keys, _, count = await _listed(door, partitions, pattern, limit, count_only)
    return keys, count


async def _listed(
    door: Door, partitions: range | None, pattern: bytes, limit: int = 0, count_only: bool = False
) -> tuple[list[str], list[int], int]:
    node = door.node
    node.check_joined()
    work = node.keyspace.gather(partitions, pattern, limit, count_only)
    return await guarded(work, node, "keys")


def _human(size: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if size < 1024 or unit == "G":
            return f"{size:.2f}{unit}" if unit != "B" else f"{size}B"
        size /= 1024  # type: ignore[assignment]
    return f"{size}B"  # pragma: no cover


_INFO_SECTIONS: Final = (
    "server",
    "clients",
    "memory",
    "stats",
    "replication",
    "gridkv",
    "keyspace",
)


async def _info(door: Door, client: Client, args: list[bytes]) -> bytes:
    wanted = {a.decode(errors="replace").lower() for a in args[1:]}
    if not wanted or wanted & {"all", "everything", "default"}:
        wanted = set(_INFO_SECTIONS)
    stats = door.kv.stats()
    lines: list[str] = []
    uptime = int(time.time() - door.started)
    if "server" in wanted:
        lines += [
            "# Server",
            f"redis_version:{REDIS_VERSION}",
            f"gridkv_version:{stats.version}",
            "redis_mode:standalone",
            f"os:{platform.system()} {platform.release()} {platform.machine()}",
            "arch_bits:64",
            f"process_id:{os.getpid()}",
            f"run_id:{door.node.node_id}",
            f"tcp_port:{door.port}",
            f"uptime_in_seconds:{uptime}",
            f"uptime_in_days:{uptime // 86400}",
            "",
        ]
    if "clients" in wanted:
        lines += [
            "# Clients",
            f"connected_clients:{len(door.clients)}",
            f"maxclients:{door.options.resp.max_clients}",
            "blocked_clients:0",
            "",
        ]
    if "memory" in wanted:
        used = stats.storage.used_bytes
        lines += [
            "# Memory",
            f"used_memory:{used}",
            f"used_memory_human:{_human(used)}",
            f"maxmemory:{stats.storage.max_bytes}",
            f"maxmemory_human:{_human(stats.storage.max_bytes)}",
            f"maxmemory_policy:{_config_values(door)['maxmemory-policy']}",
            "",
        ]
    if "stats" in wanted:
        lines += [
            "# Stats",
            f"total_connections_received:{door.connections_received}",
            f"total_commands_processed:{door.commands_processed}",
            f"rejected_connections:{door.rejected_connections}",
            f"expired_keys:{stats.storage.expirations}",
            f"evicted_keys:{stats.storage.evictions}",
            "",
        ]
    if "replication" in wanted:
        lines += ["# Replication", "role:master", "connected_slaves:0", ""]
    if "gridkv" in wanted:
        cluster = stats.cluster
        states: dict[str, int] = {}
        for member in cluster.members:
            states[member.state] = states.get(member.state, 0) + 1
        lines += [
            "# GridKV",
            f"node_id:{door.node.node_id}",
            f"cluster_ready:{int(cluster.ready)}",
            f"cluster_size:{cluster.cluster_size}",
            f"healthy_nodes:{cluster.healthy_nodes}",
            *(f"members_{state}:{n}" for state, n in sorted(states.items())),
            f"replica_count:{cluster.replica_factor}",
            f"health_score:{cluster.health_score}",
            f"local_keys:{stats.storage.keys}",
            f"local_tombstones:{stats.storage.tombstones}",
            f"replication_backlog_bytes:{stats.replication.backlog_bytes}",
            f"consistency:{door.level}",
            "",
        ]
    if "keyspace" in wanted:
        lines.append("# Keyspace")
        try:
            _, count = await _gather(door, None, b"", count_only=True)
        except GridKVError:
            count = -1  # a node did not answer: leave the figure out rather than lie
        if count > 0:
            lines.append(f"db0:keys={count},expires=0,avg_ttl=0")
        lines.append("")
    return client.replies.verbatim("\r\n".join(lines))


# -- strings --------------------------------------------------------------------------------


def _get(door: Door, client: Client, args: list[bytes]) -> Reply:
    raw = args[1]
    if door.consistency is None and 0 < len(raw) <= door.max_key:
        # get_here_first, with the key's bytes at hand (no encode) and the reply made here
        try:
            key = raw.decode()
        except UnicodeDecodeError:
            key = door.key(raw)  # raises
        partition = hash_key_bytes(raw) % door.partition_count
        records = door.local_parts[partition]
        if records is not None and door.primary_here[partition]:
            blob = records.get(key)
            if blob is None:
                return client.replies.null
            found = blob[PLAIN_AT:] if not blob[0] else door.storage.get(partition, key)
            if found is None:
                return client.replies.null
            return b"$%d\r\n%b\r\n" % (len(found), found)
    else:
        key = door.key(raw)
    return _get_later(door, client, key)


async def _get_later(door: Door, client: Client, key: str) -> bytes:
    return client.replies.maybe(await door.value(key))


def _set(door: Door, client: Client, args: list[bytes]) -> Reply:
    raw, value = args[1], args[2]
    if len(args) == 3:
        if (
            door.consistency is None
            and 0 < len(raw) <= door.max_key
            and len(value) <= door.max_value
            and not door.over_limit
        ):
            # set_here_first, with the key's bytes at hand: on the primary, nothing queued
            try:
                key = raw.decode()
            except UnicodeDecodeError:
                key = door.key(raw)  # raises
            hash_ = hash_key_bytes(raw)
            partition = hash_ % door.partition_count
            if door.primary_here[partition] and key not in door.queued:
                entry = _tuple_new(Entry, (key, value, door.hlc_now(), door.writer, 0))
                door.write_here(partition, entry, hash_)
                door.fast.sets += 1
                return OK
        key = door.key(raw)
        return _put_ok(door, key, value, 0)
    key = door.key(raw)
    condition, want_old, keep_ttl, at = ALWAYS, False, False, 0
    expiry_given = False
    i = 3
    while i < len(args):
        option = args[i].upper()
        if option == b"NX" and condition != IF_PRESENT:
            condition = IF_ABSENT
        elif option == b"XX" and condition != IF_ABSENT:
            condition = IF_PRESENT
        elif option == b"GET":
            want_old = True
        elif option == b"KEEPTTL" and not expiry_given:
            keep_ttl = True
            expiry_given = True
        elif option in (b"EX", b"PX", b"EXAT", b"PXAT") and not expiry_given and i + 1 < len(args):
            at = _expiry("set", option, args[i + 1], door.node.now_ms())
            expiry_given = True
            i += 1
        else:
            raise CommandError(_SYNTAX)
        i += 1
    if condition == ALWAYS and not want_old and not keep_ttl:
        return _put_ok(door, key, value, at)
    return _set_checked(door, client, key, [value, at, condition, want_old, keep_ttl])


async def _put_ok(door: Door, key: str, value: bytes, at: int) -> bytes:
    await door.put(key, value, at)
    return OK


async def _set_checked(door: Door, client: Client, key: str, args: list[Any]) -> bytes:
    door.check_value(args[0])
    answer = await door.mutate(key, "set", args)
    if args[3]:  # GET: the old value, whether or not the value was set
        return client.replies.maybe(answer[1])
    return OK if answer else client.replies.null


async def _setnx(door: Door, client: Client, args: list[bytes]) -> bytes:
    key = door.key(args[1])
    done = await door.mutate(key, "set", [args[2], 0, IF_ABSENT, False, False])
    return client.replies.integer(int(done))


def _setex(door: Door, client: Client, args: list[bytes]) -> Reply:
    key = door.key(args[1])
    name = args[0].decode().lower()
    unit = b"EX" if name == "setex" else b"PX"
    at = _expiry(name, unit, args[2], door.node.now_ms())
    return _put_ok(door, key, args[3], at)


async def _getset(door: Door, client: Client, args: list[bytes]) -> bytes:
    key = door.key(args[1])
    answer = await door.mutate(key, "set", [args[2], 0, ALWAYS, True, False])
    return client.replies.maybe(answer[1])


async def _getdel(door: Door, client: Client, args: list[bytes]) -> bytes:
    key = door.key(args[1])
    return client.replies.maybe(await door.mutate(key, "getdel", []))


def _getex(door: Door, client: Client, args: list[bytes]) -> Reply:
    key = door.key(args[1])
    if len(args) == 2:
        return _get(door, client, args)
    option = args[2].upper()
    if option == b"PERSIST" and len(args) == 3:
        op_args = [PERSIST, 0]
    elif option in (b"EX", b"PX", b"EXAT", b"PXAT") and len(args) == 4:
        op_args = [AT, _expiry("getex", option, args[3], door.node.now_ms())]
    else:
        raise CommandError(_SYNTAX)
    return _getex_later(door, client, key, op_args)


async def _getex_later(door: Door, client: Client, key: str, op_args: list[Any]) -> bytes:
    return client.replies.maybe(await door.mutate(key, "getex", op_args))


async def _mget(door: Door, client: Client, args: list[bytes]) -> bytes:
    keys = [door.key(raw) for raw in args[1:]]
    values = await asyncio.gather(*(door.value(k) for k in keys))
    return client.replies.bulks(values)


def _mset(door: Door, client: Client, args: list[bytes]) -> Reply:
    if len(args) % 2 != 1:
        raise _arity_error(args[0].decode().lower())
    # A key named twice takes its last value, as in Redis (written once, not raced).
    pairs = list({door.key(args[i]): args[i + 1] for i in range(1, len(args), 2)}.items())
    for _, value in pairs:
        door.check_value(value)
    if args[0].upper() == b"MSETNX":
        return _msetnx(door, client, pairs)
    return _mset_later(door, pairs)


async def _mset_later(door: Door, pairs: list[tuple[str, bytes]]) -> bytes:
    await asyncio.gather(*(door.put(k, v) for k, v in pairs))
    return OK


async def _msetnx(door: Door, client: Client, pairs: list[tuple[str, bytes]]) -> bytes:
    found = await asyncio.gather(*(door.entry(k) for k, _ in pairs))
    if any(e is not None for e in found):
        return client.replies.integer(0)
    done = await asyncio.gather(
        *(door.mutate(k, "set", [v, 0, IF_ABSENT, False, False]) for k, v in pairs)
    )
    return client.replies.integer(int(all(done)))


async def _append(door: Door, client: Client, args: list[bytes]) -> bytes:
    key = door.key(args[1])
    return client.replies.integer(await door.mutate(key, "append", [args[2]]))


async def _strlen(door: Door, client: Client, args: list[bytes]) -> bytes:
    value = await door.value(door.key(args[1]))
    return client.replies.integer(0 if value is None else len(value))


async def _getrange(door: Door, client: Client, args: list[bytes]) -> bytes:
    key = door.key(args[1])
    start, end = _int(args[2]), _int(args[3])
    value = await door.value(key) or b""
    n = len(value)
    if start < 0 and end < 0 and start > end:
        return client.replies.bulk(b"")
    if start < 0:
        start = max(0, n + start)
    if end < 0:
        end = max(0, n + end)
    end = min(end, n - 1)
    if start > end or n == 0:
        return client.replies.bulk(b"")
    return client.replies.bulk(value[start : end + 1])


async def _setrange(door: Door, client: Client, args: list[bytes]) -> bytes:
    key = door.key(args[1])
    offset = _int(args[2])
    if offset < 0:
        raise CommandError("ERR offset is out of range")
    if offset + len(args[3]) > _MAX_OFFSET:
        raise CommandError("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    return client.replies.integer(await door.mutate(key, "setrange", [offset, args[3]]))


async def _incr(door: Door, client: Client, args: list[bytes]) -> bytes:
    name = args[0].upper()
    key = door.key(args[1])
    if name == b"INCR":
        delta = 1
    elif name == b"DECR":
        delta = -1
    else:
        delta = _int(args[2])
        if name == b"DECRBY":
            if delta == -(1 << 63):
                raise CommandError("ERR decrement would overflow")
            delta = -delta
    return client.replies.integer(await door.mutate(key, "incrby", [delta]))


async def _incrbyfloat(door: Door, client: Client, args: list[bytes]) -> bytes:
    key = door.key(args[1])
    return client.replies.bulk(await door.mutate(key, "incrbyfloat", [args[2]]))


# -- keyspace -------------------------------------------------------------------------------


async def _del(door: Door, client: Client, args: list[bytes]) -> bytes:
    keys = [door.key(raw) for raw in args[1:]]
    removed = await asyncio.gather(*(door.mutate(k, "delete", []) for k in keys))
    return client.replies.integer(sum(removed))


async def _exists(door: Door, client: Client, args: list[bytes]) -> bytes:
    keys = [door.key(raw) for raw in args[1:]]
    found = await asyncio.gather(*(door.entry(k) for k in keys))
    return client.replies.integer(sum(e is not None for e in found))


async def _type(door: Door, client: Client, args: list[bytes]) -> bytes:
    found = await door.entry(door.key(args[1]))
    return b"+string\r\n" if found is not None else b"+none\r\n"


async def _ttl(door: Door, client: Client, args: list[bytes]) -> bytes:
    name = args[0].upper()
    found = await door.entry(door.key(args[1]))
    if found is None:
        return client.replies.integer(-2)
    at = found[1]
    if at == 0:
        return client.replies.integer(-1)
    if name in (b"EXPIRETIME", b"PEXPIRETIME"):
        return client.replies.integer(at if name == b"PEXPIRETIME" else at // 1000)
    left = max(0, at - door.node.now_ms())
    return client.replies.integer(left if name == b"PTTL" else (left + 500) // 1000)


def _expire(door: Door, client: Client, args: list[bytes]) -> Reply:
    name = args[0].decode().lower()
    key = door.key(args[1])
    number = _int(args[2])
    bad = CommandError(f"ERR invalid expire time in '{name}' command")
    if name in ("expire", "expireat"):
        if abs(number) > _I64_MAX // 1000:
            raise bad
        number *= 1000
    now = door.node.now_ms()
    at = number if name.endswith("at") else now + number
    if at > _I64_MAX or at < -_I64_MAX:
        raise bad
    conditions = {arg.upper() for arg in args[3:]}
    for arg in args[3:]:
        if arg.upper() not in (b"NX", b"XX", b"GT", b"LT"):
            raise CommandError(f"ERR Unsupported option {arg.decode(errors='replace')}")
    if b"NX" in conditions and conditions & {b"XX", b"GT", b"LT"}:
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if {b"GT", b"LT"} <= conditions:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    condition = EXPIRE_ANY
    for flag, bit in (
        (b"NX", EXPIRE_NX),
        (b"XX", EXPIRE_XX),
        (b"GT", EXPIRE_GT),
        (b"LT", EXPIRE_LT),
    ):
        if flag in conditions:
            condition |= bit
    return _expire_later(door, client, key, [min(max(at, 1), (1 << 62) - 1), condition])


async def _expire_later(door: Door, client: Client, key: str, op_args: list[Any]) -> bytes:
    return client.replies.integer(await door.mutate(key, "expire", op_args))


async def _persist(door: Door, client: Client, args: list[bytes]) -> bytes:
    return client.replies.integer(await door.mutate(door.key(args[1]), "persist", []))


async def _touch(door: Door, client: Client, args: list[bytes]) -> bytes:
    return await _exists(door, client, args)


async def _rename(door: Door, client: Client, args: list[bytes]) -> bytes:
    only_new = args[0].upper() == b"RENAMENX"
    source, target = door.key(args[1]), door.key(args[2])
    if source == target:
        if await door.entry(source) is None:
            raise CommandError("ERR no such key")
        return client.replies.integer(0) if only_new else OK
    if only_new and await door.entry(target) is not None:
        if await door.entry(source) is None:
            raise CommandError("ERR no such key")
        return client.replies.integer(0)
    taken = await door.mutate(source, "take", [])
    if taken is None:
        raise CommandError("ERR no such key")
    value, expires = taken
    condition = IF_ABSENT if only_new else ALWAYS
    try:
        done = await door.mutate(target, "set", [value, expires, condition, False, False])
    except Exception:
        # The target's owner failed: the value goes back under the source, unless a client
        # wrote the source meanwhile (then its value stays, and this one is lost with the
        # error; docs/resp.md).
        await door.mutate(source, "set", [value, expires, IF_ABSENT, False, False])
        raise
    if not done:  # the target appeared meanwhile: put the source back
        await door.mutate(source, "set", [value, expires, IF_ABSENT, False, False])
        return client.replies.integer(0)
    return client.replies.integer(1) if only_new else OK


async def _copy(door: Door, client: Client, args: list[bytes]) -> bytes:
    source, target = door.key(args[1]), door.key(args[2])
    replace = False
    i = 3
    while i < len(args):
        option = args[i].upper()
        if option == b"REPLACE":
            replace = True
        elif option == b"DB" and i + 1 < len(args):
            if _int(args[i + 1]) != 0:
                raise CommandError("ERR DB index is out of range")
            i += 1
        else:
            raise CommandError(_SYNTAX)
        i += 1
    if source == target:
        raise CommandError("ERR source and destination objects are the same")
    found = await door.entry(source)
    if found is None:
        return client.replies.integer(0)
    condition = ALWAYS if replace else IF_ABSENT
    op_args = [found[0], found[1], condition, False, False]
    return client.replies.integer(int(await door.mutate(target, "set", op_args)))


async def _keys(door: Door, client: Client, args: list[bytes]) -> bytes:
    keys, _ = await _gather(door, None, args[1])
    return client.replies.array([client.replies.bulk(k.encode()) for k in keys])


async def _scan(door: Door, client: Client, args: list[bytes]) -> bytes:
    cursor = parse_integer(args[1]) if args[1][:1] != b"-" else None
    if cursor is None:
        raise CommandError("ERR invalid cursor")
    pattern, count, kind = b"", 10, b""
    i = 2
    while i < len(args):
        option = args[i].upper()
        if i + 1 >= len(args):
            raise CommandError(_SYNTAX)
        if option == b"MATCH":
            pattern = args[i + 1]
        elif option == b"COUNT":
            count = _int(args[i + 1])
            if count < 1:
                raise CommandError(_SYNTAX)
        elif option == b"TYPE":
            kind = args[i + 1].lower()
        else:
            raise CommandError(_SYNTAX)
        i += 2
    total = door.options.partition_count
    keys: list[str] = []
    start = cursor
    while start < total and len(keys) < count:
        end = min(total, start + max(_SCAN_WINDOW, count))
        found, _ = await _gather(door, range(start, end), pattern)
        keys += found
        start = end
    if kind and kind != b"string":
        keys = []
    r = client.replies
    following = 0 if start >= total else start
    return r.array([r.bulk(str(following).encode()), r.array([r.bulk(k.encode()) for k in keys])])


async def _randomkey(door: Door, client: Client, args: list[bytes]) -> bytes:
    total = door.options.partition_count
    first = door._random.randrange(total)
    for start in range(0, total, _SCAN_WINDOW * 4):
        parts = [(first + p) % total for p in range(start, min(total, start + _SCAN_WINDOW * 4))]
        found, _ = await _gather(door, parts, b"", limit=1)  # type: ignore[arg-type]
        if found:
            return client.replies.bulk(found[0].encode())
    return client.replies.null


async def _flush(door: Door, keys: list[str], versions: list[int]) -> None:
    """Delete the listed versions on their primaries (``Serving.flush_listed``)."""
    node = door.node
    await guarded(node.flush_listed(keys, versions, door.level), node, "flushall")


async def _flushall(door: Door, client: Client, args: list[bytes]) -> bytes:
    if len(args) > 2 or (len(args) == 2 and args[1].upper() not in (b"ASYNC", b"SYNC")):
        raise CommandError(_SYNTAX)
    keys, versions, _ = await _listed(door, None, b"")
    if len(args) == 2 and args[1].upper() == b"ASYNC":
        door.spawn(_flush(door, keys, versions), "FLUSHALL ASYNC")  # the keys as they are go
        return OK
    await _flush(door, keys, versions)
    return OK


async def _gridkv_status(door: Door, client: Client, args: list[bytes]) -> bytes:
    node = door.node
    members = await guarded(node.cluster_status(), node, "status")
    status = {
        "node_id": node.node_id,
        "ready": node.ready,
        "replica_count": door.options.replica_count,
        "partition_count": door.options.partition_count,
        "members": members,
    }
    return client.replies.bulk(json.dumps(status, sort_keys=True).encode())


# -- the table ------------------------------------------------------------------------------


def _unknown_subcommand(name: str, sub: bytes) -> CommandError:
    return CommandError(
        f"ERR unknown subcommand '{sub.decode(errors='replace')[:128]}'. Try {name.upper()} HELP."
    )


def _container(name: str, table: dict[str, Command]) -> Handler:
    def handle(door: Door, client: Client, args: list[bytes]) -> Reply:
        if len(args) == 1:
            if name == "command":
                return _command(door, client, args)
            raise _arity_error(name)
        sub = table.get(f"{name}|{args[1].decode(errors='replace').lower()}")
        if sub is None:
            raise _unknown_subcommand(name, args[1])
        if not _arity_ok(sub.arity, len(args)):
            raise _arity_error(sub.name)
        client.last_command = sub.name
        return sub.handler(door, client, args)

    return handle


def _cmd(
    name: str,
    arity: int,
    handler: Handler,
    *,
    flags: tuple[str, ...] = (),
    keys: tuple[int, int, int] = (0, 0, 0),
    group: str = "string",
    summary: str = "",
    no_auth: bool = False,
) -> Command:
    return Command(name, arity, flags, *keys, group, summary or name, handler, no_auth=no_auth)


CLIENT_SUBCOMMANDS: Final = {
    c.name: c
    for c in (
        _cmd(
            "client|setname",
            3,
            _client_setname,
            group="connection",
            summary="Sets the connection name.",
        ),
        _cmd(
            "client|getname",
            2,
            _client_getname,
            group="connection",
            summary="Returns the connection name.",
        ),
        _cmd(
            "client|id",
            2,
            _client_id,
            group="connection",
            summary="Returns the unique client ID of the connection.",
        ),
        _cmd(
            "client|info",
            2,
            _client_info,
            group="connection",
            summary="Returns information about the connection.",
        ),
        _cmd(
            "client|list", -2, _client_list, group="connection", summary="Lists open connections."
        ),
        _cmd(
            "client|setinfo",
            4,
            _client_setinfo,
            group="connection",
            summary="Sets information specific to the client or connection.",
        ),
        _cmd(
            "client|help",
            2,
            _client_help,
            group="connection",
            summary="Returns helpful text about the different subcommands.",
        ),
    )
}
COMMAND_SUBCOMMANDS: Final = {
    c.name: c
    for c in (
        _cmd(
            "command|count",
            2,
            _command_count,
            group="server",
            summary="Returns a count of commands.",
        ),
        _cmd(
            "command|docs",
            -2,
            _command_docs,
            group="server",
            summary="Returns documentary information about one, multiple or all commands.",
        ),
        _cmd(
            "command|info",
            -2,
            _command_info,
            group="server",
            summary="Returns information about one, multiple or all commands.",
        ),
        _cmd(
            "command|list",
            -2,
            _command_list,
            group="server",
            summary="Returns a list of command names.",
        ),
        _cmd(
            "command|getkeys",
            -3,
            _command_getkeys,
            group="server",
            summary="Extracts the key names from an arbitrary command.",
        ),
        _cmd(
            "command|help",
            2,
            _command_help,
            group="server",
            summary="Returns helpful text about the different subcommands.",
        ),
    )
}
CONFIG_SUBCOMMANDS: Final = {
    c.name: c
    for c in (
        _cmd(
            "config|get",
            -3,
            _config_get,
            group="server",
            summary="Returns the effective values of configuration parameters.",
        ),
        _cmd(
            "config|set",
            -4,
            _config_set,
            group="server",
            summary="Sets configuration parameters in-flight (not supported by GridKV).",
        ),
        _cmd(
            "config|resetstat",
            2,
            _config_resetstat,
            group="server",
            summary="Resets the server's statistics.",
        ),
        _cmd(
            "config|help",
            2,
            _config_help,
            group="server",
            summary="Returns helpful text about the different subcommands.",
        ),
    )
}

_W = ("write", "denyoom")
_R = ("readonly", "fast")
_ONE = (1, 1, 1)

#: Every command by lower-case name.
COMMANDS: Final[dict[str, Command]] = {
    c.name: c
    for c in (
        # connection
        _cmd(
            "ping",
            -1,
            _ping,
            flags=("fast",),
            group="connection",
            summary="Returns the server's liveliness response.",
        ),
        _cmd(
            "echo",
            2,
            _echo,
            flags=("fast",),
            group="connection",
            summary="Returns the given string.",
        ),
        _cmd(
            "auth",
            -2,
            _auth,
            flags=("noscript", "loading", "stale", "fast", "no_auth"),
            group="connection",
            summary="Authenticates the connection.",
            no_auth=True,
        ),
        _cmd(
            "hello",
            -1,
            _hello,
            flags=("noscript", "loading", "stale", "fast", "no_auth"),
            group="connection",
            summary="Handshakes with the Redis server.",
            no_auth=True,
        ),
        _cmd(
            "select",
            2,
            _select,
            flags=("loading", "stale", "fast"),
            group="connection",
            summary="Changes the selected database (GridKV has one: 0).",
        ),
        _cmd(
            "quit",
            -1,
            _quit,
            flags=("noscript", "loading", "stale", "fast", "no_auth"),
            group="connection",
            summary="Closes the connection.",
            no_auth=True,
        ),
        _cmd(
            "reset",
            1,
            _reset,
            flags=("noscript", "loading", "stale", "fast", "no_auth"),
            group="connection",
            summary="Resets the connection.",
            no_auth=True,
        ),
        Command(
            "client",
            -2,
            ("sentinel",),
            0,
            0,
            0,
            "connection",
            "A container for client connection commands.",
            _container("client", CLIENT_SUBCOMMANDS),
            CLIENT_SUBCOMMANDS,
        ),
        # introspection
        Command(
            "command",
            -1,
            ("loading", "stale"),
            0,
            0,
            0,
            "server",
            "Returns detailed information about all commands.",
            _container("command", COMMAND_SUBCOMMANDS),
            COMMAND_SUBCOMMANDS,
        ),
        Command(
            "config",
            -2,
            (),
            0,
            0,
            0,
            "server",
            "A container for server configuration commands.",
            _container("config", CONFIG_SUBCOMMANDS),
            CONFIG_SUBCOMMANDS,
        ),
        _cmd(
            "info",
            -1,
            _info,
            flags=("loading", "stale"),
            group="server",
            summary="Returns information and statistics about the server and the GridKV cluster.",
        ),
        _cmd(
            "gridkv.status",
            1,
            _gridkv_status,
            flags=("loading", "stale"),
            group="server",
            summary="Returns the GridKV cluster's members and their figures as JSON "
            "(gridkv status).",
        ),
        _cmd(
            "time",
            1,
            _time,
            flags=("loading", "stale", "fast"),
            group="server",
            summary="Returns the server time.",
        ),
        _cmd(
            "dbsize",
            1,
            _dbsize,
            flags=("readonly",),
            group="server",
            summary="Returns the number of keys in the cluster.",
        ),
        _cmd(
            "flushdb",
            -1,
            _flushall,
            flags=("write",),
            group="server",
            summary="Removes all keys from the cluster.",
        ),
        _cmd(
            "flushall",
            -1,
            _flushall,
            flags=("write",),
            group="server",
            summary="Removes all keys from the cluster.",
        ),
        # strings
        _cmd("get", 2, _get, flags=_R, keys=_ONE, summary="Returns the string value of a key."),
        _cmd(
            "set",
            -3,
            _set,
            flags=_W,
            keys=_ONE,
            summary="Sets the string value of a key, ignoring its type.",
        ),
        _cmd(
            "setnx",
            3,
            _setnx,
            flags=(*_W, "fast"),
            keys=_ONE,
            summary="Set the string value of a key only when the key doesn't exist.",
        ),
        _cmd(
            "setex",
            4,
            _setex,
            flags=_W,
            keys=_ONE,
            summary="Sets the string value and expiration time of a key.",
        ),
        _cmd(
            "psetex",
            4,
            _setex,
            flags=_W,
            keys=_ONE,
            summary="Sets both string value and expiration time in milliseconds of a key.",
        ),
        _cmd(
            "getset",
            3,
            _getset,
            flags=(*_W, "fast"),
            keys=_ONE,
            summary="Returns the previous string value of a key after setting it to a new value.",
        ),
        _cmd(
            "getdel",
            2,
            _getdel,
            flags=("write", "fast"),
            keys=_ONE,
            summary="Returns the string value of a key after deleting the key.",
        ),
        _cmd(
            "getex",
            -2,
            _getex,
            flags=("write", "fast"),
            keys=_ONE,
            summary="Returns the string value of a key after setting its expiration time.",
        ),
        _cmd(
            "mget",
            -2,
            _mget,
            flags=_R,
            keys=(1, -1, 1),
            summary="Atomically returns the string values of one or more keys.",
        ),
        _cmd(
            "mset",
            -3,
            _mset,
            flags=_W,
            keys=(1, -1, 2),
            summary="Atomically creates or modifies the string values of one or more keys.",
        ),
        _cmd(
            "msetnx",
            -3,
            _mset,
            flags=_W,
            keys=(1, -1, 2),
            summary="Sets the string values of one or more keys only when none of them exists.",
        ),
        _cmd(
            "append",
            3,
            _append,
            flags=_W,
            keys=_ONE,
            summary="Appends a string to the value of a key. Creates the key if it doesn't exist.",
        ),
        _cmd(
            "strlen",
            2,
            _strlen,
            flags=_R,
            keys=_ONE,
            summary="Returns the length of a string value.",
        ),
        _cmd(
            "getrange",
            4,
            _getrange,
            flags=("readonly",),
            keys=_ONE,
            summary="Returns a substring of the string stored at a key.",
        ),
        _cmd(
            "substr",
            4,
            _getrange,
            flags=("readonly",),
            keys=_ONE,
            summary="Returns a substring from a string value.",
        ),
        _cmd(
            "setrange",
            4,
            _setrange,
            flags=_W,
            keys=_ONE,
            summary="Overwrites a part of a string value with another by an offset.",
        ),
        _cmd(
            "incr",
            2,
            _incr,
            flags=(*_W, "fast"),
            keys=_ONE,
            summary="Increments the integer value of a key by one.",
        ),
        _cmd(
            "decr",
            2,
            _incr,
            flags=(*_W, "fast"),
            keys=_ONE,
            summary="Decrements the integer value of a key by one.",
        ),
        _cmd(
            "incrby",
            3,
            _incr,
            flags=(*_W, "fast"),
            keys=_ONE,
            summary="Increments the integer value of a key by a number.",
        ),
        _cmd(
            "decrby",
            3,
            _incr,
            flags=(*_W, "fast"),
            keys=_ONE,
            summary="Decrements a number from the integer value of a key.",
        ),
        _cmd(
            "incrbyfloat",
            3,
            _incrbyfloat,
            flags=(*_W, "fast"),
            keys=_ONE,
            summary="Increment the floating point value of a key by a number.",
        ),
        # keyspace
        _cmd(
            "del",
            -2,
            _del,
            flags=("write",),
            keys=(1, -1, 1),
            group="keyspace",
            summary="Deletes one or more keys.",
        ),
        _cmd(
            "unlink",
            -2,
            _del,
            flags=("write", "fast"),
            keys=(1, -1, 1),
            group="keyspace",
            summary="Deletes one or more keys.",
        ),
        _cmd(
            "exists",
            -2,
            _exists,
            flags=_R,
            keys=(1, -1, 1),
            group="keyspace",
            summary="Determines whether one or more keys exist.",
        ),
        _cmd(
            "touch",
            -2,
            _touch,
            flags=_R,
            keys=(1, -1, 1),
            group="keyspace",
            summary="Returns how many of the keys exist (GridKV keeps no access time).",
        ),
        _cmd(
            "type",
            2,
            _type,
            flags=_R,
            keys=_ONE,
            group="keyspace",
            summary="Determines the type of value stored at a key.",
        ),
        _cmd(
            "expire",
            -3,
            _expire,
            flags=("write", "fast"),
            keys=_ONE,
            group="keyspace",
            summary="Sets the expiration time of a key in seconds.",
        ),
        _cmd(
            "pexpire",
            -3,
            _expire,
            flags=("write", "fast"),
            keys=_ONE,
            group="keyspace",
            summary="Sets the expiration time of a key in milliseconds.",
        ),
        _cmd(
            "expireat",
            -3,
            _expire,
            flags=("write", "fast"),
            keys=_ONE,
            group="keyspace",
            summary="Sets the expiration time of a key to a Unix timestamp.",
        ),
        _cmd(
            "pexpireat",
            -3,
            _expire,
            flags=("write", "fast"),
            keys=_ONE,
            group="keyspace",
            summary="Sets the expiration time of a key to a Unix milliseconds timestamp.",
        ),
        _cmd(
            "ttl",
            2,
            _ttl,
            flags=_R,
            keys=_ONE,
            group="keyspace",
            summary="Returns the expiration time in seconds of a key.",
        ),
        _cmd(
            "pttl",
            2,
            _ttl,
            flags=_R,
            keys=_ONE,
            group="keyspace",
            summary="Returns the expiration time in milliseconds of a key.",
        ),
        _cmd(
            "expiretime",
            2,
            _ttl,
            flags=_R,
            keys=_ONE,
            group="keyspace",
            summary="Returns the expiration time of a key as a Unix timestamp.",
        ),
        _cmd(
            "pexpiretime",
            2,
            _ttl,
            flags=_R,
            keys=_ONE,
            group="keyspace",
            summary="Returns the expiration time of a key as a Unix milliseconds timestamp.",
        ),
        _cmd(
            "persist",
            2,
            _persist,
            flags=("write", "fast"),
            keys=_ONE,
            group="keyspace",
            summary="Removes the expiration time of a key.",
        ),
        _cmd(
            "rename",
            3,
            _rename,
            flags=("write",),
            keys=(1, 2, 1),
            group="keyspace",
            summary="Renames a key and overwrites the destination.",
        ),
        _cmd(
            "renamenx",
            3,
            _rename,
            flags=("write", "fast"),
            keys=(1, 2, 1),
            group="keyspace",
            summary="Renames a key only when the target key name doesn't exist.",
        ),
        _cmd(
            "copy",
            -3,
            _copy,
            flags=("write", "denyoom"),
            keys=(1, 2, 1),
            group="keyspace",
            summary="Copies the value of a key to a new key.",
        ),
        _cmd(
            "keys",
            2,
            _keys,
            flags=("readonly",),
            group="keyspace",
            summary="Returns all key names that match a pattern.",
        ),
        _cmd(
            "scan",
            -2,
            _scan,
            flags=("readonly",),
            group="keyspace",
            summary="Iterates over the key names in the cluster.",
        ),
        _cmd(
            "randomkey",
            1,
            _randomkey,
            flags=("readonly",),
            group="keyspace",
            summary="Returns a random key name from the cluster.",
        ),
    )
}


#: Every command by its name in lower and upper case, as bytes (what clients send).
_BY_NAME: Final[dict[bytes, Command]] = {
    spelling: c
    for c in COMMANDS.values()
    for spelling in (c.name.encode(), c.name.upper().encode())
}


def _unknown(args: list[bytes]) -> bytes:
    """Redis's error for an unknown command: its name and its first arguments.

    128 bytes of arguments at most, each quoted and followed by a space, the last cut to fit.
    """
    shown = b""
    for arg in args[1:]:
        if len(shown) >= 128:
            break
        shown += b"'" + arg[: 128 - len(shown)] + b"' "
    text = shown.decode(errors="replace")
    name = args[0][:128].decode(errors="replace")
    return encode_error(f"ERR unknown command '{name}', with args beginning with: {text}")


def key_of(args: list[bytes]) -> bytes | None:
    """The one key a command works on, or ``None`` (none, several, or unknown command)."""
    command = _BY_NAME.get(args[0]) or _BY_NAME.get(args[0].lower())
    if command is None or command.first_key != 1 or command.last_key != 1 or len(args) < 2:
        return None
    return args[1]


def dispatch(door: Door, client: Client, args: list[bytes]) -> Reply:
    """Run one command: its checks (known, arity, authenticated), then its handler.

    Errors become error replies; nothing raised by a command escapes.
    """
    try:
        command = _BY_NAME.get(args[0]) or _BY_NAME.get(args[0].lower())
        if command is None:
            return _unknown(args)
        if not client.authenticated and not command.no_auth:
            return b"-NOAUTH Authentication required.\r\n"
        arity = command.arity
        if (len(args) != arity) if arity > 0 else (len(args) < -arity):
            return encode_error(f"ERR wrong number of arguments for '{command.name}' command")
        client.last_command = command.name
        door.commands_processed += 1
        reply = command.handler(door, client, args)
    except Exception as exc:
        return error_of(exc)
    if reply.__class__ is bytes:
        return reply
    return _settled(reply)  # type: ignore[arg-type]


async def _settled(reply: Awaitable[bytes]) -> bytes:
    try:
        return await reply
    except Exception as exc:
        return error_of(exc)

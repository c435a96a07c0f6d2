"""The RESP door's server: one protocol object per client connection, on the node's loop.

Commands of a connection run in order. What a read of the socket brings is parsed at once
and run as far as the commands complete on the spot (a GET or SET of a key this node holds at
level one); their replies leave in one write. The first command that has to wait for other
nodes hands the rest to a task: commands on different keys wait together, a key's commands
(and those without one key) in order, and replies leave in the commands' order; meanwhile
more input is parsed by that task, and reading stops while what waits passes a bound.

Replies a client does not read queue up to ``resp.max_output_bytes`` (checked every 64 KiB of
replies); past it the client is cut, as Redis cuts one past its output buffer limit, so a
client that sends a whole pipeline before it reads is served. A malformed request gets
Redis's error, then the connection closes; the node and the other connections go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from itertools import count
from typing import TYPE_CHECKING, cast

from gridkv.base.errors import ConfigError
from gridkv.base.log import LOGGER_NAME
from gridkv.service.resp.commands import Client, Door, Reply, dispatch, key_of
from gridkv.service.resp.protocol import (
    QueryTooLong,
    RequestParser,
    RespError,
    encode_error,
)

if TYPE_CHECKING:
    from gridkv.api.aio import AsyncGridKV

__all__ = ["RespServer"]

log = logging.getLogger(LOGGER_NAME)

#: The reply of a command cancelled inside GridKV (it was not acknowledged).
_CANCELLED = encode_error("TRYAGAIN the command was cancelled inside GridKV; retry it")
#: Bytes of replies made on the spot before they are written (and the output bound checked).
_FLUSH_AT = 64 * 1024
#: Commands of one connection waiting for other nodes at once, at most.
_IN_FLIGHT = 128
#: Unparsed input a connection may hold while a command waits, before reading pauses.
_PAUSE_INPUT_AT = 256 * 1024
_ids = count(1)


def _consume(task: asyncio.Future[bytes]) -> None:
    """Retrieve a finished command's outcome (a cancellation, at a connection's loss)."""
    if not task.cancelled():
        task.exception()


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _peer(transport: asyncio.BaseTransport, which: str) -> str:
    info = transport.get_extra_info(which)
    if isinstance(info, tuple) and len(info) >= 2:
        host = info[0]
        return f"[{host}]:{info[1]}" if ":" in str(host) else f"{host}:{info[1]}"
    return "?:0"


class _Connection(asyncio.Protocol):
    """One client of the door."""

    def __init__(self, server: RespServer) -> None:
        self._server = server
        self._door = server.door
        options = server.door.options.resp
        self._parser = RequestParser(options.max_args, options.max_query_bytes)
        self._max_output = options.max_output_bytes
        self._transport: asyncio.Transport | None = None
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._read_paused = False
        self._closed = False
        #: Set when the door closes: no further command is run.
        self._draining = False
        #: Set when the client half-closed: close once what it sent is answered.
        self._eof = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        door = self._door
        door.connections_received += 1
        if len(door.clients) >= door.options.resp.max_clients:
            door.rejected_connections += 1
            transport.write(b"-ERR max number of clients reached\r\n")
            self._closed = True
            transport.close()
            return
        transport.set_write_buffer_limits(high=256 * 1024)
        client = Client(next(_ids), _peer(transport, "peername"), _peer(transport, "sockname"))
        client.authenticated = not door.needs_auth
        client.pending_output = transport.get_write_buffer_size
        self._parser.authenticated = client.authenticated
        self._client = client
        door.clients[client.id] = client
        self._server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            self._parser.feed(data)
        except QueryTooLong:
            log.warning(
                "closing a RESP client past resp.max_query_bytes",
                extra={"client": self._client.addr if self._client else "?"},
            )
            self.abort()
            return
        if self._task is not None:
            if self._parser_backlog() > _PAUSE_INPUT_AT and not self._read_paused:
                self._pause_reading()
            return
        self._run()

    def eof_received(self) -> bool:
        # The client will send nothing more (a half-close, as `nc -N` does): what it sent is
        # still run and answered, then the connection closes.
        self._eof = True
        if self._task is None:
            self._finish_if_ended()
        return True  # keep the transport open for the replies

    def connection_lost(self, exc: Exception | None) -> None:
        # Commands already running finish (their replies go nowhere); nothing more is read.
        self._closed = True
        if self._client is not None:
            self._door.clients.pop(self._client.id, None)
        self._server.connections.discard(self)

    # -- running commands -------------------------------------------------------------------

    def _parser_backlog(self) -> int:
        return self._parser._taken

    def _pause_reading(self) -> None:
        if not self._read_paused and self._transport is not None and not self._closed:
            self._read_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and self._transport is not None and not self._closed:
            if self._draining:
                return
            self._read_paused = False
            self._transport.resume_reading()

    def _next(self) -> list[bytes] | bytes | None:
        """The next command, ``None`` for none yet, or the error ending the connection."""
        if self._draining:
            return None
        try:
            return self._parser.next()
        except RespError as exc:
            return encode_error(exc.message)

    def _run(self) -> None:
        """Run what is parsed, on the spot, until a command has to wait."""
        client = self._client
        if client is None:
            return
        door = self._door
        out: list[bytes] = []
        size = 0
        while not self._closed:
            args = self._next()
            if args is None:
                break
            if isinstance(args, bytes):  # malformed: the error, then close
                out.append(args)
                self._flush(out)
                self.close()
                return
            reply = dispatch(door, client, args)
            self._parser.authenticated = client.authenticated  # AUTH, HELLO, RESET change it
            if isinstance(reply, bytes):
                out.append(reply)
                if client.closing:
                    self._flush(out)
                    self.close()
                    return
                size += len(reply)
                if size >= _FLUSH_AT:  # the output bound is checked as replies are made
                    self._flush(out)
                    out, size = [], 0
                continue
            self._flush(out)
            # The command runs now, as a task of its own: it is not lost (nor left an unawaited
            # coroutine) if the connection goes before the task below takes its first step.
            first = asyncio.ensure_future(reply)
            first.add_done_callback(_consume)
            self._task = asyncio.ensure_future(self._continue(first, key_of(args)))
            self._task.add_done_callback(self._task_done)
            return
        self._flush(out)
        self._finish_if_ended()

    async def _continue(self, first: asyncio.Future[bytes], first_key: bytes | None) -> None:
        """Run the rest of what is parsed, several commands waiting at once.

        Commands on different keys wait for other nodes together (up to
        :data:`_IN_FLIGHT` of them); replies leave in the commands' order. A command on a key
        an earlier one still waits on, one without a single key (MGET, AUTH, FLUSHALL...),
        and any command after one of those, first waits for everything before it: a client
        sees its own commands in order.
        """
        client = self._client
        assert client is not None
        door = self._door
        pending: deque[tuple[asyncio.Future[bytes] | bytes, bytes | None]] = deque()
        keys: dict[bytes | None, int] = {}

        def add(reply: Reply, key: bytes | None) -> None:
            if isinstance(reply, bytes):
                pending.append((reply, None))
                return
            task = asyncio.ensure_future(reply)
            task.add_done_callback(_consume)
            pending.append((task, key))
            keys[key] = keys.get(key, 0) + 1

        def written() -> None:
            """Write the replies at the head that are ready."""
            out = []
            while pending:
                head, key = pending[0]
                if isinstance(head, bytes):
                    out.append(head)
                elif head.done():
                    out.append(_CANCELLED if head.cancelled() else head.result())
                    left = keys[key] - 1
                    if left:
                        keys[key] = left
                    else:
                        del keys[key]
                else:
                    break
                pending.popleft()
            self._flush(out)

        async def head_done() -> None:
            head = pending[0][0]
            if not isinstance(head, bytes):
                await asyncio.wait([head])
            written()

        add(first, first_key)
        while True:
            written()
            if self._closed:
                return
            args = self._next()
            if args is None:
                if not pending:
                    return
                await head_done()
                continue
            if isinstance(args, bytes):
                while pending:
                    await head_done()
                self._flush([args])
                self.close()
                return
            key = key_of(args)
            if key is None or key in keys or None in keys:
                while pending:
                    await head_done()
            elif len(pending) >= _IN_FLIGHT:
                await head_done()
            add(dispatch(door, client, args), key)
            self._parser.authenticated = client.authenticated
            if client.closing:
                while pending:
                    await head_done()
                self.close()
                return

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._task = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # pragma: no cover - dispatch turns every error into a reply
            log.error("RESP connection failed", exc_info=exc)
            self.abort()
            return
        if not self._closed:
            self._resume_reading()
            self._run()  # input that arrived while the last command waited

    def _finish_if_ended(self) -> None:
        """Close once the client has half-closed and every command it sent is answered."""
        if self._eof and self._task is None and not self._closed:
            self.close()

    def _flush(self, out: list[bytes]) -> None:
        transport = self._transport
        if not out or transport is None or self._closed:
            return
        transport.write(out[0] if len(out) == 1 else b"".join(out))
        if transport.get_write_buffer_size() > self._max_output:
            log.warning(
                "closing a RESP client past resp.max_output_bytes (it does not read its replies)",
                extra={"client": self._client.addr if self._client else "?"},
            )
            self.abort()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task running this client's commands that wait, if one runs."""
        return self._task

    def drain(self) -> None:
        """Read no further commands (the door is closing); those under way finish."""
        self._draining = True
        self._pause_reading()

    def close(self) -> None:
        """Close after the replies written so far."""
        self._closed = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Cut the connection at once."""
        self._closed = True
        if self._transport is not None:
            self._transport.abort()


class RespServer:
    """The RESP door of a node: Redis clients read and write the cluster through it.

    :param kv: the node's async API (the door runs on its loop).
    :param listen: ``host:port`` to listen on (port 0: a free one).
    """

    def __init__(self, kv: AsyncGridKV, listen: str) -> None:
        self.door = Door(kv)
        self._listen = listen
        self._server: asyncio.base_events.Server | None = None
        self.connections: set[_Connection] = set()

    @property
    def address(self) -> str:
        """The address the door listens on (the port resolved), ``""`` before :meth:`start`."""
        if self._server is None or not self._server.sockets:
            return ""
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def __aenter__(self) -> RespServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen (an empty address: no door, nothing to do).

        :raises ConfigError: ``resp.listen`` cannot be listened on (in use, no such host).
        """
        if not self._listen:
            return
        host, port = _split(self._listen)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Connection(self), host or None, port, reuse_address=True, backlog=1024
            )
        except OSError as exc:
            raise ConfigError(
                f"config key 'resp.listen': cannot listen on {self._listen!r}: "
                f"{exc.strerror or exc}"
            ) from None
        self.door.port = int(self.address.rpartition(":")[2])
        log.info("RESP door open", extra={"address": self.address})

    async def close(self, timeout: float = 5.0) -> None:
        """Stop listening, let commands under way finish, then close every connection.

        No new command is read meanwhile; a command still waiting after ``timeout`` seconds
        is cancelled (its client gets no reply, so it was not acknowledged).
        """
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.drain()
        pending = [c.task for c in self.connections if c.task is not None]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for connection in list(self.connections):
            connection.close()
        self._server = None

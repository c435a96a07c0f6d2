"""A TCP transport on asyncio's Protocol API.

Frames on the wire are ``length:u32 | kind:u8 | request id:u64 | body``; the length is checked
against ``network.max_frame_bytes`` before anything is buffered for the body
(:class:`gridkv.wire.FrameDecoder`). Kinds are a request, its response (same id) and a one-way
message. Many requests are in flight on one connection at once; a peer has a small pool of
connections (``network.max_conns``), the least busy one is used, and idle ones beyond
``network.max_idle`` are closed. Dial, read and write time-outs come from ``network.timeout``,
``network.read_timeout`` and ``network.write_timeout``; a frame that stops arriving midway
for ``network.read_timeout`` closes its connection. A lost connection is re-dialled on
the next send; after a failed dial the next one waits ``network.reconnect_backoff``, doubling
(with jitter) up to ``network.reconnect_max_backoff``, and sends meanwhile fail at once. When
the kernel buffer fills, writers wait for it to drain (back-pressure) instead of buffering
without bound. TCP_NODELAY is set. With ``network.ssl.enabled`` every connection is mutual TLS.
Errors become GridKV errors: :class:`~gridkv.errors.PeerUnavailable`,
:class:`~gridkv.errors.PeerTimeout`, :class:`~gridkv.errors.ProtocolError`,
:class:`~gridkv.errors.ShuttingDown`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
import ssl
import struct
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, cast

from gridkv.errors import (
    AuthenticationError,
    ConfigError,
    PeerTimeout,
    PeerUnavailable,
    ShuttingDown,
)
from gridkv.transport.base import (
    Handler,
    Handshake,
    TransportCounters,
    TransportStats,
    check_outbound,
)

if TYPE_CHECKING:
    from gridkv.options import Options, SslOptions

__all__ = ["TcpTransport", "split_address", "ssl_contexts"]

_HEAD = struct.Struct(">IBQ")  # length (of kind + id + body), kind, request id
_LENGTH = struct.Struct(">I")
_INNER = _HEAD.size - 4
_REQUEST, _RESPONSE, _ONE_WAY, _HELLO = 0, 1, 2, 3
#: Frames in progress on each pooled connection before another connection is dialled.
_BUSY = 16
#: Queued bytes that are written at once rather than at the end of the loop turn.
_FLUSH_BYTES = 64 * 1024


def split_address(address: str, *, listening: bool = False) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) to ``(host, port)``.

    :param listening: the address is one to listen on, where port 0 means "any free port".
    :raises PeerUnavailable: the address has no valid port.
    """
    host, sep, port = address.rpartition(":")
    if (
        not sep
        or not port.isdigit()
        or not int(port) >= (0 if listening else 1)
        or int(port) > 65535
    ):
        raise PeerUnavailable(f"address {address!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def ssl_contexts(options: SslOptions) -> tuple[ssl.SSLContext, ssl.SSLContext] | None:
    """The (server, client) TLS contexts ``network.ssl`` describes; ``None`` when TLS is off.

    Both present this node's certificate; with ``verify_peer`` both require the peer's and
    check it against ``ca_file`` (mutual TLS). TLS 1.2 is the oldest version accepted.

    :raises ConfigError: a certificate, key or CA file cannot be loaded; the message names it.
    """
    if not options.enabled:
        return None
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for context in (server, client):
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _load(context.load_cert_chain, "cert_file", options.cert_file, options.key_file or None)
        if options.verify_peer:
            context.verify_mode = ssl.CERT_REQUIRED
            if options.ca_file:
                _load(context.load_verify_locations, "ca_file", options.ca_file)
            else:
                context.load_default_certs(
                    ssl.Purpose.CLIENT_AUTH if context is server else ssl.Purpose.SERVER_AUTH
                )
    client.check_hostname = options.verify_peer and options.check_hostname
    if not options.verify_peer:
        client.verify_mode = ssl.CERT_NONE
    return server, client


def _load(method: Any, key: str, *args: Any) -> None:
    try:
        method(*args)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"config key 'network.ssl.{key}': cannot load {args[0]!r}: {exc}"
        ) from None


def _expire(future: asyncio.Future[bytes]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class _Connection(asyncio.Protocol):
    """One TCP connection, in either direction."""

    def __init__(self, owner: TcpTransport, peer: str) -> None:
        self.owner = owner
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        #: Requests and sends using the connection right now (a pool entry in use is not idle).
        self.users = 0
        #: False while the kernel buffer is full (between pause_writing and resume_writing).
        self.writable = True
        self._drained = asyncio.Event()
        self._drained.set()
        self._buffer = bytearray()
        self._last_data = 0.0
        self._stall_timer: asyncio.TimerHandle | None = None
        self._limit = owner.max_frame_bytes + _INNER
        self._out: list[bytes] = []
        self._out_bytes = 0
        #: Resolved when the peer's hello is accepted (at once without a handshake).
        self.ready: asyncio.Future[None] = self._loop.create_future()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        if self.peer == "inbound":
            peername = transport.get_extra_info("peername")
            if peername:
                self.peer = f"{peername[0]}:{peername[1]}"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.owner._connections.add(self)
        handshake = self.owner._handshake
        if handshake is None:
            self.ready.set_result(None)
        else:
            self.write_now(_HELLO, 0, handshake.hello())
            self._flush()  # before anything the peer says is read
            # A peer that never says hello (either direction) does not keep the socket.
            self._loop.call_later(self.owner.dial_timeout, self._hello_overdue)

    def _hello_overdue(self) -> None:
        if not self.ready.done():
            self.owner.counters.errors += 1
            self.abort()

    def data_received(self, data: bytes) -> None:
        """Split the stream into frames; the length is checked before the body is buffered."""
        buffer = self._buffer
        view: bytes | bytearray = data
        if buffer:
            buffer += data
            view = buffer
        pos = 0
        end = len(view)
        while end - pos >= 4:
            (length,) = _LENGTH.unpack_from(view, pos)
            if length > self._limit or length < _INNER:
                self.owner.counters.errors += 1
                self.abort()
                return
            stop = pos + 4 + length
            if stop > end:
                break
            _, kind, request_id = _HEAD.unpack_from(view, pos)
            self._frame(kind, request_id, bytes(view[pos + _HEAD.size : stop]))
            pos = stop
        if buffer:
            del buffer[:pos]
        elif pos < end:
            buffer += view[pos:]
        if buffer:
            self._last_data = self._loop.time()
            if self._stall_timer is None:
                self._stall_timer = self._loop.call_later(
                    self.owner.read_timeout, self._check_stalled
                )

    def _check_stalled(self) -> None:
        """A frame that stops arriving midway for ``read_timeout`` closes the connection."""
        self._stall_timer = None
        if not self._buffer:
            return
        quiet = self._loop.time() - self._last_data
        if quiet >= self.owner.read_timeout:
            self.owner.counters.errors += 1
            self.abort()
        else:
            self._stall_timer = self._loop.call_later(
                self.owner.read_timeout - quiet, self._check_stalled
            )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
        self.owner._connections.discard(self)
        self.owner._forget(self)
        error = PeerUnavailable(f"connection to {self.peer!r} lost")
        for future in self.pending.values():
            if not future.done():
                future.set_exception(error)
        self.pending.clear()
        if not self.ready.done():
            self.ready.set_exception(PeerUnavailable(f"{self.peer!r} closed before its hello"))
            self.ready.exception()
        if not self.closed.done():
            self.closed.set_result(None)
        self.writable = True
        self._drained.set()

    def pause_writing(self) -> None:
        self.writable = False
        self._drained.clear()

    def resume_writing(self) -> None:
        self.writable = True
        self._drained.set()

    # -- frames ------------------------------------------------------------------------

    def _frame(self, kind: int, request_id: int, body: bytes) -> None:
        owner = self.owner
        owner.counters.bytes_received += len(body)
        if not self.ready.done():
            self._hello(kind, body)
            return
        if kind == _RESPONSE:
            future = self.pending.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(body)
            return
        if kind == _REQUEST:
            owner.counters.requests_received += 1
        elif kind == _ONE_WAY:
            owner.counters.messages_received += 1
        else:
            owner.counters.errors += 1
            self.abort()
            return
        handler = owner._handler
        if handler is None:
            return
        try:
            answer = handler(self.peer, body)
        except Exception:
            owner.counters.errors += 1
            return
        if isinstance(answer, bytes):
            if kind == _REQUEST:
                self._answer(request_id, answer)
        elif answer is not None:
            owner._spawn(self._answer_later(kind, request_id, answer))

    def _hello(self, kind: int, body: bytes) -> None:
        """The first frame on a connection with a handshake: the peer's hello, or the end."""
        handshake = self.owner._handshake
        assert handshake is not None
        try:
            if kind != _HELLO:
                raise AuthenticationError(f"{self.peer!r} sent a frame before its hello")
            handshake.check(self.peer, body)
        except AuthenticationError as exc:
            self.owner.counters.errors += 1
            self.ready.set_exception(exc)
            self.ready.exception()  # marked retrieved; a dialler awaits it in _dial
            self.abort()
            return
        self.ready.set_result(None)

    async def _answer_later(
        self, kind: int, request_id: int, pending: Awaitable[bytes | None]
    ) -> None:
        try:
            answer = await pending
        except Exception:
            self.owner.counters.errors += 1
            return
        if kind == _REQUEST and answer is not None:
            self._answer(request_id, answer)

    def _answer(self, request_id: int, answer: bytes) -> None:
        if self.writable:
            with contextlib.suppress(PeerUnavailable):
                self.write_now(_RESPONSE, request_id, answer)
        else:
            self.owner._spawn(self._answer_blocked(request_id, answer))

    async def _answer_blocked(self, request_id: int, answer: bytes) -> None:
        with contextlib.suppress(PeerUnavailable, PeerTimeout, ShuttingDown):
            await self.write(_RESPONSE, request_id, answer)

    def write_now(self, kind: int, request_id: int, body: bytes) -> None:
        """Queue a frame for the kernel buffer (callers check :attr:`writable` first).

        Frames queued in one turn of the event loop go out in one write at its end, so many
        requests in flight cost one system call, not one each.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            raise PeerUnavailable(f"connection to {self.peer!r} is closed")
        out = self._out
        if not out:
            self._loop.call_soon(self._flush)
        out.append(_HEAD.pack(len(body) + _INNER, kind, request_id))
        out.append(body)
        self._out_bytes += len(body) + _HEAD.size
        self.owner.counters.bytes_sent += len(body)
        if self._out_bytes >= _FLUSH_BYTES:
            # A writer that never yields to the loop must not queue without bound: hand the
            # batch over now, and the transport's high-water mark pauses the next writer.
            self._flush()

    def _flush(self) -> None:
        out = self._out
        if not out:
            return
        self._out = []
        self._out_bytes = 0
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(b"".join(out))

    async def write(self, kind: int, request_id: int, body: bytes) -> None:
        """Write a frame, waiting up to ``write_timeout`` for a full buffer to drain."""
        if not self.writable:
            try:
                await asyncio.wait_for(self._drained.wait(), self.owner.write_timeout)
            except TimeoutError:
                raise PeerTimeout(
                    f"{self.peer!r} did not take data for {self.owner.write_timeout:g}s "
                    "(network.write_timeout)"
                ) from None
        self.write_now(kind, request_id, body)

    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        """Close after the queued frames have been written."""
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class TcpTransport:
    """The ``tcp`` transport.

    :param address: the address peers reach this node at (``host:port``).
    :param bind: the address to listen on; ``address`` when ``None``.
    :param max_conns: connections per peer at most.
    :param max_idle: idle connections kept per peer.
    :param dial_timeout: seconds to open a connection.
    :param read_timeout: default seconds to wait for an answer.
    :param write_timeout: seconds a blocked write may wait.
    :param max_frame_bytes: largest frame body sent or accepted.
    :param reconnect_backoff: first wait after a failed dial before the next one.
    :param reconnect_max_backoff: longest such wait.
    :param ssl_contexts: ``(server, client)`` TLS contexts; ``None`` for plain TCP.
    """

    name = "tcp"

    def __init__(
        self,
        address: str,
        *,
        bind: str | None = None,
        max_conns: int = 16,
        max_idle: int = 4,
        dial_timeout: float = 3.0,
        read_timeout: float = 2.0,
        write_timeout: float = 2.0,
        max_frame_bytes: int = 16 * 1024 * 1024,
        reconnect_backoff: float = 0.05,
        reconnect_max_backoff: float = 1.0,
        ssl_contexts: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
    ) -> None:
        self._address = address
        self._bind = bind or address
        self.max_conns = max_conns
        self.max_idle = max_idle
        self.dial_timeout = dial_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.max_frame_bytes = max_frame_bytes
        self.reconnect_backoff = reconnect_backoff
        self.reconnect_max_backoff = reconnect_max_backoff
        self._ssl = ssl_contexts
        #: address -> (failed dials in a row, loop time before which no dial is tried, error)
        self._failures: dict[str, tuple[int, float, str]] = {}
        self._rng = random.Random(f"tcp {address}")
        self._handler: Handler | None = None
        self._handshake: Handshake | None = None
        self._server: asyncio.Server | None = None
        self._pools: dict[str, list[_Connection]] = {}
        self._dialing: dict[str, asyncio.Future[_Connection]] = {}
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(1)
        self._closed = False
        self.counters = TransportCounters()

    @classmethod
    def from_options(cls, options: Options) -> TcpTransport:
        """Build the transport a node's options describe (its ``network`` section).

        :raises ConfigError: ``local_address`` is not host:port, or a TLS file cannot be loaded.
        """
        net = options.network
        for key, value in (
            ("local_address", options.local_address),
            ("network.bind_addr", net.bind_addr),
        ):
            if value:
                try:
                    split_address(value, listening=True)
                except PeerUnavailable:
                    raise ConfigError(
                        f"config key {key!r}: the tcp transport needs host:port (got {value!r})"
                    ) from None
        return cls(
            options.local_address,
            bind=net.bind_addr or None,
            max_conns=net.max_conns,
            max_idle=net.max_idle,
            dial_timeout=net.timeout,
            read_timeout=net.read_timeout,
            write_timeout=net.write_timeout,
            max_frame_bytes=net.max_frame_bytes,
            reconnect_backoff=net.reconnect_backoff,
            reconnect_max_backoff=net.reconnect_max_backoff,
            ssl_contexts=ssl_contexts(net.ssl),
        )

    @property
    def local_address(self) -> str:
        """The address peers reach this node at."""
        return self._address

    async def start(self, handler: Handler, handshake: Handshake | None = None) -> None:
        """Listen on the bind address; inbound frames go to ``handler``.

        :raises PeerUnavailable: the address cannot be listened on.
        """
        if self._closed:
            raise ShuttingDown(f"tcp transport {self._address!r} is closed")
        self._handler = handler
        self._handshake = handshake
        host, port = split_address(self._bind, listening=True)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Connection(self, "inbound"),
                host,
                port,
                reuse_address=True,
                ssl=self._ssl[0] if self._ssl else None,
                ssl_handshake_timeout=self.dial_timeout if self._ssl else None,
            )
        except OSError as exc:
            raise PeerUnavailable(
                f"cannot listen on {self._bind!r} (network.bind_addr or local_address): "
                f"{exc.strerror or exc}"
            ) from None
        if port == 0 and self._server.sockets:
            actual = self._server.sockets[0].getsockname()[1]
            self._address = f"{split_address(self._address, listening=True)[0]}:{actual}"

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, conn: _Connection) -> None:
        pool = self._pools.get(conn.peer)
        if pool is not None and conn in pool:
            pool.remove(conn)

    def _pooled(self, address: str) -> _Connection | None:
        """The fast path of :meth:`_acquire`: the first pooled connection, if open and not busy."""
        pool = self._pools.get(address)
        if pool:
            for conn in pool:
                if conn.users < _BUSY and conn.usable():
                    conn.users += 1
                    return conn
        return None

    async def _acquire(self, address: str) -> _Connection:
        """A connection to ``address`` marked in use (give it back with :meth:`_release`).

        The least busy pooled connection is used; another is dialled when every one has
        ``_BUSY`` frames in progress and the pool is below ``max_conns``.
        """
        closed = 0
        while True:
            conn = await self._pick(address)
            if not conn.usable():
                closed += 1
                if closed > 3:
                    raise PeerUnavailable(f"connections to {address!r} keep closing")
                continue
            if conn.users >= _BUSY and self._may_dial(address):
                continue  # it filled up while this caller waited on its dial: spread out
            conn.users += 1
            return conn

    def _may_dial(self, address: str) -> bool:
        live = [c for c in self._pools.get(address, []) if c.usable()]
        return len(live) < self.max_conns and all(c.users >= _BUSY for c in live)

    def _release(self, conn: _Connection) -> None:
        conn.users -= 1
        pool = self._pools.get(conn.peer, [])
        idle = [c for c in pool if not c.users and not c.pending]
        for extra in idle[self.max_idle :]:
            pool.remove(extra)
            extra.close()

    async def _pick(self, address: str) -> _Connection:
        if self._closed:
            raise ShuttingDown(f"tcp transport {self._address!r} is closed")
        pool = self._pools.setdefault(address, [])
        live = [c for c in pool if c.usable()]
        if live:
            best = min(live, key=lambda c: c.users)
            if best.users < _BUSY or len(live) >= self.max_conns:
                return best
        dialing = self._dialing.get(address)
        if dialing is not None:
            return await asyncio.shield(dialing)
        failed = self._failures.get(address)
        if failed is not None:
            wait = failed[1] - asyncio.get_running_loop().time()
            if wait > 0:
                self.counters.errors += 1
                raise PeerUnavailable(
                    f"{address!r} is unreachable ({failed[2]}); next dial in {wait:.2f}s "
                    "(network.reconnect_backoff)"
                )
        future: asyncio.Future[_Connection] = asyncio.get_running_loop().create_future()
        self._dialing[address] = future
        try:
            try:
                conn = await self._dial(address)
            except (PeerUnavailable, PeerTimeout) as exc:
                self._dial_failed(address, str(exc))
                raise
            self._failures.pop(address, None)
            pool.append(conn)
            future.set_result(conn)
            return conn
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it through shield
            raise
        finally:
            del self._dialing[address]

    def _dial_failed(self, address: str, error: str) -> None:
        count = self._failures.get(address, (0, 0.0, ""))[0] + 1
        delay = min(self.reconnect_max_backoff, self.reconnect_backoff * 2 ** (count - 1))
        delay *= self._rng.uniform(0.8, 1.0)
        self._failures[address] = (count, asyncio.get_running_loop().time() + delay, error)

    async def _dial(self, address: str) -> _Connection:
        host, port = split_address(address)
        loop = asyncio.get_running_loop()
        tls = self._ssl[1] if self._ssl else None
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self, address),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                ),
                self.dial_timeout,
            )
        except TimeoutError:
            self.counters.errors += 1
            raise PeerTimeout(
                f"could not connect to {address!r} within {self.dial_timeout:g}s (network.timeout)"
            ) from None
        except OSError as exc:  # ssl.SSLError included: a refused or unverifiable certificate
            self.counters.errors += 1
            raise PeerUnavailable(f"cannot connect to {address!r}: {exc.strerror or exc}") from None
        if self._handshake is not None:
            try:
                await asyncio.wait_for(asyncio.shield(conn.ready), self.dial_timeout)
            except TimeoutError:
                self.counters.errors += 1
                conn.abort()
                raise PeerTimeout(
                    f"{address!r} sent no hello within {self.dial_timeout:g}s (network.timeout)"
                ) from None
            except (AuthenticationError, PeerUnavailable) as exc:
                conn.abort()
                raise PeerUnavailable(f"handshake with {address!r} failed: {exc}") from None
        return conn

    def _check(self, address: str, payload: bytes) -> None:
        check_outbound(
            self.name,
            self._address,
            self._closed,
            address,
            len(payload),
            self.max_frame_bytes,
            self.counters,
        )

    async def request(self, address: str, payload: bytes, timeout: float | None = None) -> bytes:
        """Send ``payload`` to ``address`` and return the answer."""
        self._check(address, payload)
        conn = self._pooled(address) or await self._acquire(address)
        request_id = next(self._ids)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        conn.pending[request_id] = future
        self.counters.requests_sent += 1
        wait = self.read_timeout if timeout is None else timeout
        timer = loop.call_later(wait, _expire, future)
        try:
            if conn.writable:
                conn.write_now(_REQUEST, request_id, payload)
            else:
                await conn.write(_REQUEST, request_id, payload)
            return await future
        except PeerTimeout:  # the write timed out (a subclass of TimeoutError)
            self.counters.errors += 1
            raise
        except TimeoutError:  # set by the timer
            self.counters.errors += 1
            raise PeerTimeout(f"{address!r} did not answer within {wait:g}s") from None
        finally:
            timer.cancel()
            conn.pending.pop(request_id, None)
            self._release(conn)

    async def send(self, address: str, payload: bytes) -> None:
        """Send ``payload`` one way."""
        self._check(address, payload)
        conn = self._pooled(address) or await self._acquire(address)
        self.counters.messages_sent += 1
        try:
            if conn.writable:
                conn.write_now(_ONE_WAY, 0, payload)
            else:
                await conn.write(_ONE_WAY, 0, payload)
        finally:
            self._release(conn)

    async def close(self) -> None:
        """Stop listening, close every connection and fail waiting requests; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        error = ShuttingDown(f"tcp transport {self._address!r} closed during the request")
        conns = list(self._connections)
        for conn in conns:
            for future in conn.pending.values():
                if not future.done():
                    future.set_exception(error)
            conn.pending.clear()
            conn.close()
        if conns:
            await asyncio.wait([c.closed for c in conns], timeout=2)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def stats(self) -> TransportStats:
        """Current counters."""
        return self.counters.snapshot(
            self.name, self._address, self._bind, connections=len(self._connections)
        )

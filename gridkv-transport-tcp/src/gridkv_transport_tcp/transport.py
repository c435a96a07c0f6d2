"""A TCP transport on asyncio's Protocol API.

Frames on the wire are GridKV's stream frames, ``length:u32 | kind:u8 | request id:u64 |
body`` (:mod:`gridkv.wire.framing`, which also reads them); a bad length or kind closes the
connection before any body is buffered. Kinds are a request, its response (same id), a one-way
message and a hello.

Two lanes per peer. Requests go over a small pool of connections (``network.max_conns``): many
in flight on each, the least busy one used, idle ones beyond ``network.max_idle`` closed, and
a writer waits up to ``network.write_timeout`` when the peer's buffers are full
(back-pressure). One-way frames (every membership probe, ack and gossip) go over one control
connection of their own, so they never queue behind the large replication, handoff and
anti-entropy frames on the pool; they never wait for the peer either: like datagrams they are
queued at once, or lost with the connection.

Limits against a peer that is hostile or broken, each a counted disconnect: at most
``network.max_output_buffer_bytes`` queued for one connection, and nothing taken by the peer
for ``network.write_timeout`` while writing is paused; unfinished inbound frames within
``network.max_inbound_buffer_bytes`` across the node; every frame complete within
``network.read_timeout`` of its first byte; at most :data:`MAX_ANSWERS_IN_PROGRESS` awaitable
answers per connection, with reading paused while that many run.

Dial time-out is ``network.timeout``, answer time-out ``network.read_timeout``. A lost
connection is re-dialled on the next send; after a failed dial the next one waits
``network.reconnect_backoff``, doubling (with jitter) up to ``network.reconnect_max_backoff``,
and sends meanwhile fail at once. TCP_NODELAY is set. With ``network.ssl.enabled`` every
connection is mutual TLS. Errors become GridKV errors: :class:`~gridkv.base.errors.PeerUnavailable`,
:class:`~gridkv.base.errors.PeerTimeout`, :class:`~gridkv.base.errors.ProtocolError`,
:class:`~gridkv.base.errors.ShuttingDown`.

This module is the transport's face; the parts behind it, one job each:
``_connection`` (a connection's life and its frames in, the inbound limits), ``_output`` (its
frames out, the output limits), ``_pool`` (pools, control lanes, dialling, back-off),
``_shared`` (the limits, counters and budget they share), ``_addresses`` and ``_tls``;
request time-outs share timers (:mod:`gridkv.transport.deadlines`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from typing import TYPE_CHECKING

from gridkv.base.errors import ConfigError, PeerTimeout, PeerUnavailable, ShuttingDown
from gridkv.transport.base import Handler, Handshake, TransportStats
from gridkv.transport.deadlines import Deadlines
from gridkv.wire.framing import ONE_WAY, REQUEST

from gridkv_transport_tcp._addresses import split_address
from gridkv_transport_tcp._connection import MAX_ANSWERS_IN_PROGRESS, Connection
from gridkv_transport_tcp._pool import MAX_REMEMBERED_FAILURES, Pool
from gridkv_transport_tcp._shared import Shared
from gridkv_transport_tcp._tls import ssl_contexts

if TYPE_CHECKING:
    from gridkv.base.options import Options

__all__ = [
    "MAX_ANSWERS_IN_PROGRESS",
    "MAX_REMEMBERED_FAILURES",
    "TcpTransport",
    "split_address",
    "ssl_contexts",
]

#: Seconds :meth:`TcpTransport.close` lets queued frames go out before it drops them.
_CLOSE_FLUSH = 2.0


def _abandon(future: asyncio.Future[bytes]) -> None:
    """Let go of an answer nobody will await (its request was never written)."""
    if not future.cancel() and not future.cancelled():
        future.exception()  # set meanwhile (time-out, lost connection): marked retrieved


class TcpTransport:
    """The ``tcp`` transport.

    :param address: the address peers reach this node at (``host:port``).
    :param bind: the address to listen on; ``address`` when ``None``.
    :param max_conns: connections per peer at most.
    :param max_idle: idle connections kept per peer.
    :param dial_timeout: seconds to open a connection.
    :param read_timeout: default seconds to wait for an answer; also the most an inbound
        frame may take from its first byte to its last.
    :param write_timeout: seconds a blocked request may wait to be written; also the most a
        peer may go without taking anything while data waits for it.
    :param max_frame_bytes: largest frame body sent or accepted.
    :param max_output_buffer_bytes: bytes queued for one connection's peer at most.
    :param max_inbound_buffer_bytes: bytes of unfinished inbound frames held across all
        connections at most (at least ``max_frame_bytes``).
    :param reconnect_backoff: first wait after a failed dial before the next one.
    :param reconnect_max_backoff: longest such wait.
    :param ssl_contexts: ``(server, client)`` TLS contexts; ``None`` for plain TCP.

    Each of these settings reads back as a (read-only) attribute of the same name.
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
        max_output_buffer_bytes: int = 64 * 1024 * 1024,
        max_inbound_buffer_bytes: int = 64 * 1024 * 1024,
        reconnect_backoff: float = 0.05,
        reconnect_max_backoff: float = 1.0,
        ssl_contexts: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
    ) -> None:
        self._bind = bind or address
        self._tls_server = ssl_contexts[0] if ssl_contexts else None
        self._shared = Shared(
            address,
            dial_timeout=dial_timeout,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            max_frame_bytes=max_frame_bytes,
            max_output_buffer_bytes=max_output_buffer_bytes,
            max_inbound_buffer_bytes=max_inbound_buffer_bytes,
        )
        self._pool = Pool(
            self._shared,
            max_conns=max_conns,
            max_idle=max_idle,
            reconnect_backoff=reconnect_backoff,
            reconnect_max_backoff=reconnect_max_backoff,
            tls=ssl_contexts[1] if ssl_contexts else None,
            seed=f"tcp {address}",
        )
        self._server: asyncio.Server | None = None
        self._ids = itertools.count(1)
        #: The time-outs of the requests in flight, sharing timers.
        self._deadlines = Deadlines()
        self.counters = self._shared.counters

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
            max_output_buffer_bytes=net.max_output_buffer_bytes,
            max_inbound_buffer_bytes=net.max_inbound_buffer_bytes,
            reconnect_backoff=net.reconnect_backoff,
            reconnect_max_backoff=net.reconnect_max_backoff,
            ssl_contexts=ssl_contexts(net.ssl),
        )

    # -- the settings, read back -------------------------------------------------------

    @property
    def max_conns(self) -> int:
        """Connections per peer at most."""
        return self._pool.max_conns

    @property
    def max_idle(self) -> int:
        """Idle connections kept per peer."""
        return self._pool.max_idle

    @property
    def dial_timeout(self) -> float:
        """Seconds to open a connection."""
        return self._shared.dial_timeout

    @property
    def read_timeout(self) -> float:
        """Default seconds to wait for an answer, and for an inbound frame to complete."""
        return self._shared.read_timeout

    @property
    def write_timeout(self) -> float:
        """Seconds a blocked request waits to be written, and a peer may take nothing."""
        return self._shared.write_timeout

    @property
    def max_frame_bytes(self) -> int:
        """Largest frame body sent or accepted."""
        return self._shared.max_frame_bytes

    @property
    def max_output_buffer_bytes(self) -> int:
        """Bytes queued for one connection's peer at most."""
        return self._shared.max_output_buffer_bytes

    @property
    def max_inbound_buffer_bytes(self) -> int:
        """Bytes of unfinished inbound frames held across all connections at most."""
        return self._shared.max_inbound_buffer_bytes

    @property
    def reconnect_backoff(self) -> float:
        """First wait after a failed dial before the next one."""
        return self._pool.reconnect_backoff

    @property
    def reconnect_max_backoff(self) -> float:
        """Longest wait between dials after failed ones."""
        return self._pool.reconnect_max_backoff

    # -- the Transport interface -------------------------------------------------------

    @property
    def local_address(self) -> str:
        """The address peers reach this node at."""
        return self._shared.address

    async def start(self, handler: Handler, handshake: Handshake | None = None) -> bool:
        """Listen on the bind address; inbound frames go to ``handler``.

        :param handshake: run on every connection, which it then protects (records).
        :returns: whether ``handshake`` is run (it is, when given).
        :raises PeerUnavailable: the address cannot be listened on.
        """
        shared = self._shared
        if shared.closed:
            raise ShuttingDown(f"tcp transport {shared.address!r} is closed")
        shared.handler = handler
        shared.handshake = handshake
        host, port = split_address(self._bind, listening=True)
        loop = asyncio.get_running_loop()
        pool = self._pool
        tls = self._tls_server
        try:
            self._server = await loop.create_server(
                lambda: Connection(shared, pool, "inbound"),
                host,
                port,
                reuse_address=True,
                ssl=tls,
                ssl_handshake_timeout=shared.dial_timeout if tls else None,
            )
        except OSError as exc:
            raise PeerUnavailable(
                f"cannot listen on {self._bind!r} (network.bind_addr or local_address): "
                f"{exc.strerror or exc}"
            ) from None
        if port == 0 and self._server.sockets:
            actual = self._server.sockets[0].getsockname()[1]
            shared.address = f"{split_address(shared.address, listening=True)[0]}:{actual}"
        return handshake is not None

    async def request(self, address: str, payload: bytes, timeout: float | None = None) -> bytes:
        """Send ``payload`` to ``address`` and return the answer."""
        self._shared.check_outbound(self.name, address, len(payload))
        pool = self._pool
        conn = pool.pooled(address) or await pool.acquire(address)
        request_id = next(self._ids)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        conn.pending[request_id] = future
        self.counters.requests_sent += 1
        wait = self._shared.read_timeout if timeout is None else timeout
        slot = self._deadlines.add(loop, future, wait)
        try:
            try:
                if conn.writable:
                    conn.write_now(REQUEST, request_id, payload)
                    if len(conn.pending) == 1:
                        # Alone on the connection: out now, not a loop turn later. Requests
                        # made together still share one write (and one record).
                        conn.flush()
                else:
                    await conn.write(REQUEST, request_id, payload)
            except BaseException:
                _abandon(future)
                raise
            return await future
        except PeerTimeout:  # the write timed out (a subclass of TimeoutError)
            self.counters.errors += 1
            raise
        except TimeoutError:  # set by the deadline
            self.counters.errors += 1
            raise PeerTimeout(f"{address!r} did not answer within {wait:g}s") from None
        finally:
            self._deadlines.discard(slot, future)
            conn.pending.pop(request_id, None)
            pool.release(conn)

    async def send(self, address: str, payload: bytes) -> None:
        """Send ``payload`` one way, over the peer's control lane.

        It never waits for the peer to read: the frame is queued at once (within
        ``max_output_buffer_bytes``), so a probe is not held up by a peer that has stopped.

        :raises PeerUnavailable: the lane cannot be opened, or was cut because the peer reads
            nothing.
        """
        self._shared.check_outbound(self.name, address, len(payload))
        conn = self._pool.lanes.get(address)
        if conn is None or not conn.usable():
            if conn is not None:
                conn.close()  # past its guard's lifetime: what it queued goes out first...
                # ...unless the peer stopped reading: then it goes at the write time-out.
                asyncio.get_running_loop().call_later(self._shared.write_timeout, conn.abort)
            conn = await self._pool.connect(address, lane=True)
        self.counters.messages_sent += 1
        conn.queue(ONE_WAY, 0, payload)

    async def close(self) -> None:
        """Stop listening, close every connection and fail waiting requests; idempotent.

        Frames already queued are written first, for a few seconds at most.
        """
        shared = self._shared
        if shared.closed:
            return
        shared.closed = True
        if self._server is not None:
            self._server.close()
        self._pool.abandon_dials()
        error = ShuttingDown(f"tcp transport {shared.address!r} closed during the request")
        conns = list(self._pool.connections)
        for conn in conns:
            for future in conn.pending.values():
                if not future.done():
                    future.set_exception(error)
            conn.pending.clear()
            conn.close()
        if conns:
            _, unflushed = await asyncio.wait([c.closed for c in conns], timeout=_CLOSE_FLUSH)
            if unflushed:  # peers that do not read their last frames: drop them
                for conn in conns:
                    conn.abort()
                await asyncio.wait(unflushed, timeout=_CLOSE_FLUSH)
        self._deadlines.close()
        for task in list(shared.tasks):
            task.cancel()
        if shared.tasks:
            await asyncio.gather(*shared.tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def stats(self) -> TransportStats:
        """Current counters."""
        return self.counters.snapshot(
            self.name,
            self._shared.address,
            self._bind,
            connections=len(self._pool.connections),
            partial_bytes=self._shared.inbound,
        )

"""Where a tcp transport's connections to peers come from: pools, lanes, dials and back-off."""

from __future__ import annotations

import asyncio
import random
import ssl

from gridkv.base.errors import AuthenticationError, PeerTimeout, PeerUnavailable, ShuttingDown

from gridkv_transport_tcp._addresses import split_address
from gridkv_transport_tcp._connection import Connection
from gridkv_transport_tcp._shared import Shared

__all__ = ["MAX_REMEMBERED_FAILURES", "Pool"]

#: Frames in progress on each pooled connection before another connection is dialled.
_BUSY = 16
#: Addresses whose failed dials (and back-off) are remembered at most; the oldest failure is
#: forgotten first, so addresses named by others cannot grow the table without bound.
MAX_REMEMBERED_FAILURES = 4096


class Pool:
    """A tcp transport's connections, and where new ones come from.

    It holds every open connection, and per peer the request pool, the control lane, the dial
    in progress and the back-off after failed dials. Requests take a connection from the
    peer's pool (:meth:`pooled`, else :meth:`acquire`) and give it back (:meth:`release`);
    one-way frames go over the peer's lane (:attr:`lanes`, else ``connect(address,
    lane=True)``).

    :param max_conns: pooled connections per peer at most.
    :param max_idle: idle pooled connections kept per peer.
    :param reconnect_backoff: first wait after a failed dial before the next one.
    :param reconnect_max_backoff: longest such wait.
    :param tls: the client TLS context; ``None`` for plain TCP.
    :param seed: seeds the back-off's jitter.
    """

    def __init__(
        self,
        shared: Shared,
        *,
        max_conns: int,
        max_idle: int,
        reconnect_backoff: float,
        reconnect_max_backoff: float,
        tls: ssl.SSLContext | None,
        seed: str,
    ) -> None:
        self.shared = shared
        self.max_conns = max_conns
        self.max_idle = max_idle
        self.reconnect_backoff = reconnect_backoff
        self.reconnect_max_backoff = reconnect_max_backoff
        self._tls = tls
        #: Every open connection, inbound ones included.
        self.connections: set[Connection] = set()
        #: address -> the request connections to it.
        self._pools: dict[str, list[Connection]] = {}
        #: address -> the control lane: the connection one-way frames to it go over.
        self.lanes: dict[str, Connection] = {}
        #: (address, lane) -> the dial in progress, which concurrent callers share.
        self._dialing: dict[tuple[str, bool], asyncio.Task[Connection]] = {}
        #: address -> (failed dials in a row, loop time before which no dial is tried, error)
        self.failures: dict[str, tuple[int, float, str]] = {}
        self._rng = random.Random(seed)

    # -- the connections' registry ---------------------------------------------------------

    def opened(self, conn: Connection) -> None:
        """Count ``conn`` among the open connections."""
        self.connections.add(conn)

    def lost(self, conn: Connection) -> None:
        """Forget ``conn``: it is no longer open, pooled, or a lane."""
        self.connections.discard(conn)
        if conn.lane:
            if self.lanes.get(conn.peer) is conn:
                del self.lanes[conn.peer]
            return
        pool = self._pools.get(conn.peer)
        if pool is not None and conn in pool:
            pool.remove(conn)

    # -- request connections -----------------------------------------------------------

    def pooled(self, address: str) -> Connection | None:
        """The fast path of :meth:`acquire`: the first pooled connection, if open and not busy."""
        pool = self._pools.get(address)
        if pool:
            for conn in pool:
                if conn.users < _BUSY and conn.usable():
                    conn.users += 1
                    conn.used = True
                    return conn
        return None

    async def acquire(self, address: str) -> Connection:
        """A connection to ``address`` marked in use (give it back with :meth:`release`).

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
            conn.used = True
            return conn

    def _may_dial(self, address: str) -> bool:
        live = [c for c in self._pools.get(address, []) if c.usable()]
        return len(live) < self.max_conns and all(c.users >= _BUSY for c in live)

    def release(self, conn: Connection) -> None:
        """Give back a connection from :meth:`pooled` or :meth:`acquire`.

        Idle connections beyond ``max_idle`` close, and idle ones past their guard's lifetime.
        """
        conn.users -= 1
        pool = self._pools.get(conn.peer, [])
        # Not one dialled for callers that have yet to take it: closing it under them made
        # them dial again, and after three such closes fail ("keep closing").
        idle = [c for c in pool if not c.users and not c.pending and c.used]
        retired = [c for c in idle if not c.usable()]
        for extra in retired + [c for c in idle if c.usable()][self.max_idle :]:
            pool.remove(extra)
            extra.close()

    async def _pick(self, address: str) -> Connection:
        if self.shared.closed:
            raise ShuttingDown(f"tcp transport {self.shared.address!r} is closed")
        live = [c for c in self._pools.get(address, []) if c.usable()]
        if live:
            best = min(live, key=lambda c: c.users)
            if best.users < _BUSY or len(live) >= self.max_conns:
                return best
        return await self.connect(address, lane=False)

    # -- dialling ----------------------------------------------------------------------

    async def connect(self, address: str, *, lane: bool) -> Connection:
        """Dial ``address`` for its pool or as its control lane.

        Concurrent callers share one dial per address and role. The dial runs as a task of
        its own: a caller that is cancelled (a read that had its answers from other replicas)
        leaves it to finish for the others, and for the pool. After failed dials the peer is
        not dialled again until its back-off has passed; meanwhile this fails at once.
        """
        key = (address, lane)
        dialing = self._dialing.get(key)
        if dialing is not None and dialing.done():
            # Finished, its ``_dialled`` not run yet (a caller woken earlier in this loop
            # turn got here first): sharing it would give this caller a connection that is
            # already full, without waiting, and ``acquire`` would ask again forever.
            del self._dialing[key]
            dialing = None
        if dialing is None:
            failed = self.failures.get(address)
            if failed is not None:
                wait = failed[1] - asyncio.get_running_loop().time()
                if wait > 0:
                    self.shared.counters.errors += 1
                    raise PeerUnavailable(
                        f"{address!r} is unreachable ({failed[2]}); next dial in {wait:.2f}s "
                        "(network.reconnect_backoff)"
                    )
            dialing = asyncio.get_running_loop().create_task(self._connect(address, lane))
            self._dialing[key] = dialing
            dialing.add_done_callback(lambda task: self._dialled(key, task))
        return await asyncio.shield(dialing)

    def _dialled(self, key: tuple[str, bool], task: asyncio.Task[Connection]) -> None:
        if self._dialing.get(key) is task:
            del self._dialing[key]
        if not task.cancelled():
            task.exception()  # retrieved: the callers get it through shield, if any is left

    async def _connect(self, address: str, lane: bool) -> Connection:
        try:
            try:
                conn = await self._dial(address, lane)
            except (PeerUnavailable, PeerTimeout, AuthenticationError) as exc:
                # A refused handshake backs off too: a node with the wrong secret does not
                # cost its peers a handshake for each of its requests.
                self._dial_failed(address, str(exc))
                raise
        except asyncio.CancelledError:  # the transport is closing: callers get an error
            raise ShuttingDown(f"tcp transport {self.shared.address!r} closed") from None
        if self.shared.closed:
            conn.abort()
            raise ShuttingDown(f"tcp transport {self.shared.address!r} is closed")
        self.failures.pop(address, None)
        if lane:
            self.lanes[address] = conn
        else:
            self._pools.setdefault(address, []).append(conn)
        return conn

    def abandon_dials(self) -> None:
        """Stop the dials in progress (the transport closes); their callers get ShuttingDown."""
        for task in list(self._dialing.values()):
            task.cancel()

    def _dial_failed(self, address: str, error: str) -> None:
        count = self.failures.pop(address, (0, 0.0, ""))[0] + 1
        delay = min(self.reconnect_max_backoff, self.reconnect_backoff * 2 ** (count - 1))
        delay *= self._rng.uniform(0.8, 1.0)
        self.failures[address] = (count, asyncio.get_running_loop().time() + delay, error)
        while len(self.failures) > MAX_REMEMBERED_FAILURES:
            # The address that failed longest ago goes first (kept in order of failure).
            del self.failures[next(iter(self.failures))]

    async def _dial(self, address: str, lane: bool) -> Connection:
        host, port = split_address(address)
        loop = asyncio.get_running_loop()
        shared = self.shared
        tls = self._tls
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Connection(shared, self, address, lane=lane),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                ),
                shared.dial_timeout,
            )
        except TimeoutError:
            shared.counters.errors += 1
            raise PeerTimeout(
                f"could not connect to {address!r} within {shared.dial_timeout:g}s "
                "(network.timeout)"
            ) from None
        except OSError as exc:  # ssl.SSLError included: a refused or unverifiable certificate
            shared.counters.errors += 1
            raise PeerUnavailable(f"cannot connect to {address!r}: {exc.strerror or exc}") from None
        if shared.handshake is not None:
            try:
                await asyncio.wait_for(asyncio.shield(conn.ready), shared.dial_timeout)
            except TimeoutError:
                shared.counters.errors += 1
                conn.abort()
                raise PeerTimeout(
                    f"{address!r} sent no hello within {shared.dial_timeout:g}s (network.timeout)"
                ) from None
            except AuthenticationError as exc:
                conn.abort()
                raise AuthenticationError(f"handshake with {address!r} failed: {exc}") from None
            except PeerUnavailable as exc:
                conn.abort()
                raise PeerUnavailable(f"handshake with {address!r} failed: {exc}") from None
        return conn
